/**
 * Kubernetes' name rules (apimachinery validation), for every room that checks a name before it
 * names a file, a URL path or an object with it.
 */
export const DNS_LABEL_MAX = 63;
export const DNS_SUBDOMAIN_MAX = 253;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** IsDNS1123Label (namespaces, device and request names): <= 63 characters. */
export function isDnsLabel(s: string): boolean {
  return s.length <= DNS_LABEL_MAX && DNS_LABEL.test(s);
}

/** IsDNS1123Subdomain (object names): dot-separated labels, <= 253 characters in all. */
export function isDnsSubdomain(s: string): boolean {
  return s.length > 0 && s.length <= DNS_SUBDOMAIN_MAX && s.split('.').every((l) => DNS_LABEL.test(l));
}

/** Kubernetes UIDs are UUIDs; accept DNS-label-like strings, never anything with `/` or `.`. */
const CLAIM_UID = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
export function isValidClaimUid(uid: string): boolean {
  return CLAIM_UID.test(uid);
}

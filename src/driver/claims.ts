/**
 * The one edge that fetches a ResourceClaim from the API server (src/api/resource.ts has its
 * shape), an in-memory stand-in, and the checks the kubelet helper makes on what it fetched.
 */
import { KubeApiError, toKubeClient, type KubeClient } from '../kube/client.js';
import type { KubeConfig } from '../kube/config.js';
import { GpuDraError } from '../util/errors.js';
import type { ResourceClaim } from '../api/resource.js';

/** Reads a ResourceClaim by namespace/name. Implementations throw when it cannot be read. */
export interface ClaimGetter {
  get(namespace: string, name: string): Promise<ResourceClaim>;
}

/**
 * Thin edge over GET resource.k8s.io/v1 resourceclaims, on a {@link KubeClient} (shared, e.g.
 * with the ResourceSlice publisher, so both use one keep-alive connection pool) or a config.
 */
export function kubeClaimGetter(kube: KubeClient | KubeConfig): Promise<ClaimGetter> {
  const client = toKubeClient(kube);
  return Promise.resolve({
    async get(namespace, name) {
      return await client.request<ResourceClaim>(
        'GET',
        `/apis/resource.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/resourceclaims/${encodeURIComponent(name)}`,
      );
    },
  });
}

/** Did a ClaimGetter say the claim does not exist (HTTP 404), as opposed to failing to ask? */
export function isClaimNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.statusCode === 404;
}

/** In-memory getter for tests, demos and the simulator. */
export class MemoryClaimGetter implements ClaimGetter {
  private readonly claims = new Map<string, ResourceClaim>();

  set(claim: ResourceClaim): void {
    const { namespace = '', name = '' } = claim.metadata ?? {};
    this.claims.set(`${namespace}/${name}`, claim);
  }

  delete(namespace: string, name: string): void {
    this.claims.delete(`${namespace}/${name}`);
  }

  get(namespace: string, name: string): Promise<ResourceClaim> {
    const claim = this.claims.get(`${namespace}/${name}`);
    if (!claim) {
      // As the apiserver answers, so that callers see the same 404.
      return Promise.reject(
        new KubeApiError({
          method: 'GET',
          path: `/apis/resource.k8s.io/v1/namespaces/${namespace}/resourceclaims/${name}`,
          statusCode: 404,
          reason: 'NotFound',
          message: `resourceclaims.resource.k8s.io "${name}" not found`,
        }),
      );
    }
    return Promise.resolve(structuredClone(claim));
  }
}

/**
 * Checks what the kubelet helper checks: the claim is allocated and still the one the kubelet
 * asked for (same UID; a different UID means it was deleted and re-created).
 */
export function checkFetchedClaim(claim: ResourceClaim, expectedUid: string): void {
  const uid = claim.metadata?.uid;
  const where = `${claim.metadata?.namespace ?? '?'}/${claim.metadata?.name ?? '?'}`;
  if (uid !== expectedUid) {
    throw new GpuDraError(
      'CLAIM_REPLACED',
      `claim ${where} has UID ${uid ?? '<none>'}, expected ${expectedUid}: it was replaced`,
      { claimUid: expectedUid },
    );
  }
  if (!claim.status?.allocation) {
    throw new GpuDraError('CLAIM_NOT_ALLOCATED', `claim ${where} (${expectedUid}) is not allocated`, {
      claimUid: expectedUid,
    });
  }
}

/**
 * Bounding values echoed from input (a request, a claim's config) into messages and logs, so
 * that a 1 MB field cannot make a 1 MB error: the kubelet takes at most 4 MiB per reply and the
 * API server caps a status field, and a log line that size helps no one.
 */

/** Echoed values are cut to this many characters unless a caller says otherwise. */
export const ECHO_MAX = 80;

/**
 * `value` when it has at most `max` characters; else its start, an ellipsis and its original
 * length, the whole at most `max` + ~30 characters. Cuts on code points, never inside a pair.
 */
export function shorten(value: string, max = ECHO_MAX): string {
  if (value.length <= max) return value;
  const keep = Math.max(0, max - 16);
  let head = value.slice(0, keep);
  // A lone high surrogate at the cut would be invalid UTF-16 in the reply.
  if (/[\uD800-\uDBFF]$/.test(head)) head = head.slice(0, -1);
  return `${head}…(${String(value.length)} characters)`;
}

/**
 * Any value, as JSON cut by {@link shorten}: for "(got …)" in a message. Never throws (a cycle,
 * a BigInt or nesting deeper than the stack becomes a placeholder).
 */
export function shownJson(value: unknown, max = ECHO_MAX): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = `<unprintable ${typeof value}>`;
  }
  return shorten(text ?? String(value), max);
}

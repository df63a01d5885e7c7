/**
 * Natural order: digit runs compare numerically, so `gpu-2` < `gpu-10` and
 * `gpu-1-mig-1g10gb-19-2` < `gpu-1-mig-1g10gb-19-10`. Ties (never for valid names) fall back to
 * plain string order, so the order is total.
 */
export function naturalCompare(a: string, b: string): number {
  const ta = a.match(/\d+|\D+/g) ?? [];
  const tb = b.match(/\d+|\D+/g) ?? [];
  const n = Math.min(ta.length, tb.length);
  for (let i = 0; i < n; i++) {
    const x = ta[i] ?? '';
    const y = tb[i] ?? '';
    if (x === y) continue;
    const dx = /^\d/.test(x);
    const dy = /^\d/.test(y);
    if (dx && dy) {
      const bx = BigInt(x);
      const by = BigInt(y);
      if (bx !== by) return bx < by ? -1 : 1;
      // Same value, different leading zeros: shorter first.
      if (x.length !== y.length) return x.length - y.length;
    } else {
      return x < y ? -1 : 1;
    }
  }
  if (ta.length !== tb.length) return ta.length - tb.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

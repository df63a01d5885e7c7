import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ECHO_MAX, shorten, shownJson } from '../../src/util/shorten.js';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('shorten', () => {
  it('keeps short values, cuts long ones to the bound with their length, never splitting a pair', () => {
    expect(shorten('abc')).toBe('abc');
    expect(shorten('x'.repeat(ECHO_MAX))).toBe('x'.repeat(ECHO_MAX));
    expect(shorten('x'.repeat(1_000_000))).toBe(`${'x'.repeat(ECHO_MAX - 16)}…(1000000 characters)`);
    // 63 ASCII characters, then an emoji whose high surrogate would be the 64th: dropped whole.
    expect(shorten(`${'a'.repeat(63)}🎉${'b'.repeat(100)}`)).toBe(`${'a'.repeat(63)}…(165 characters)`);
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 400 }), fc.nat({ max: 200 }), (s, max) => {
        const out = shorten(s, max);
        expect(out.length).toBeLessThanOrEqual(Math.max(max, 0) + 30);
        expect(out).not.toMatch(LONE_SURROGATE);
        if (s.length <= max) expect(out).toBe(s);
      }),
      { seed: 20261202, numRuns: 300 },
    );
  });

  it('shows any value as short JSON, never throwing', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    expect(shownJson('GpuConfig')).toBe('"GpuConfig"');
    expect(shownJson(undefined)).toBe('undefined');
    expect(shownJson(cyclic)).toBe('<unprintable object>');
    expect(shownJson(10n)).toBe('<unprintable bigint>');
    expect(shownJson({ deep: 'y'.repeat(200_000) })).toMatch(/^\{"deep":"y+…\(200011 characters\)$/);
  });
});

// The `# expect:` lines of examples/claims/*.yaml, read by the unit test (explain semantics)
// and the e2e test (the real scheduler):
//   # expect: profile=<h100-8x|a100-mig|mixed> [request=R] [devices=N] [match=REGEX] [chosen=DEV] [unsatisfiable]

/** The simulated nodes the examples are checked on. */
export const EXAMPLE_PROFILES = ['h100-8x', 'a100-mig', 'mixed'] as const;
export type ExampleProfile = (typeof EXAMPLE_PROFILES)[number];

export interface Expectation {
  profile: ExampleProfile;
  unsatisfiable: boolean;
  request?: string;
  devices?: number;
  match?: RegExp;
  chosen?: string;
}

/** Every `# expect:` line of an example; throws on a field or profile it does not know. */
export function parseExpectations(text: string): Expectation[] {
  return [...text.matchAll(/^# expect: (.*)$/gm)].map((m) => {
    const fields = new Map<string, string>();
    let unsatisfiable = false;
    for (const part of (m[1] ?? '').trim().split(/\s+/)) {
      if (part === 'unsatisfiable') unsatisfiable = true;
      else {
        const eq = part.indexOf('=');
        if (eq < 0) throw new Error(`bad expect field ${part}`);
        fields.set(part.slice(0, eq), part.slice(eq + 1));
      }
    }
    const profile = fields.get('profile') as ExampleProfile;
    if (!EXAMPLE_PROFILES.includes(profile)) throw new Error(`unknown profile in: ${m[0]}`);
    const devicesText = fields.get('devices');
    const match = fields.get('match');
    const request = fields.get('request');
    const chosen = fields.get('chosen');
    return {
      profile,
      unsatisfiable,
      ...(request !== undefined ? { request } : {}),
      ...(devicesText !== undefined ? { devices: Number(devicesText) } : {}),
      ...(match !== undefined ? { match: new RegExp(match) } : {}),
      ...(chosen !== undefined ? { chosen } : {}),
    };
  });
}

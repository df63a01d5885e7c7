/**
 * nvmlDeviceArchitecture_t (nvml.h `NVML_DEVICE_ARCH_*`) → the names NVIDIA's DRA driver publishes,
 * which are go-nvlib's `GetArchitectureAsString` (users' CEL compares them, so spelling matters:
 * "Ada Lovelace", not "Ada"). 11 and 12 are unassigned in nvml.h.
 */
export const ARCHITECTURES: Readonly<Record<number, string>> = {
  2: 'Kepler',
  3: 'Maxwell',
  4: 'Pascal',
  5: 'Volta',
  6: 'Turing',
  7: 'Ampere',
  8: 'Ada Lovelace',
  9: 'Hopper',
  10: 'Blackwell',
  13: 'Rubin',
  0xffffffff: 'Unknown',
};

/**
 * nvmlBrandType_t (nvml.h `NVML_BRAND_*`) → go-nvlib's `GetBrandAsString`. VGAMING is an alias of
 * CLOUD_GAMING (11); 17 is unassigned.
 */
export const BRANDS: Readonly<Record<number, string>> = {
  0: 'Unknown',
  1: 'Quadro',
  2: 'Tesla',
  3: 'NVS',
  4: 'Grid',
  5: 'GeForce',
  6: 'Titan',
  7: 'NvidiaVApps',
  8: 'NvidiaVPC',
  9: 'NvidiaVCS',
  10: 'NvidiaVWS',
  11: 'NvidiaCloudGaming',
  12: 'QuadroRTX',
  13: 'NvidiaRTX',
  14: 'Nvidia',
  15: 'GeForceRTX',
  16: 'TitanRTX',
};

/**
 * nvmlDeviceAddressingMode_t → go-nvlib's `GetAddressingModeAsString`. NONE (0) is "the platform
 * supports a mode but none is active", published as `None`; a GPU whose NVML answers
 * NOT_SUPPORTED has no mode at all (discovery leaves the field out).
 */
export const ADDRESSING_MODES: Readonly<Record<number, string>> = {
  0: 'None',
  1: 'HMM',
  2: 'ATS',
};

/**
 * An architecture NVML reports that go-nvlib has no name for makes NVIDIA's plugin exit; we
 * publish `Unknown` (its name for NVML_DEVICE_ARCH_UNKNOWN) and keep the node usable.
 */
export function architectureName(arch: number): string {
  return ARCHITECTURES[arch] ?? 'Unknown';
}

/** As {@link architectureName}: an unassigned brand value is `Unknown`, not a failed start. */
export function brandName(brand: number): string {
  return BRANDS[brand] ?? 'Unknown';
}

/** Undefined for a value nvml.h does not define (NVIDIA's plugin fails on it; we leave it out). */
export function addressingModeName(mode: number): string | undefined {
  return ADDRESSING_MODES[mode];
}

/** CUDA driver version integer (13000) → `major.minor` (`13.0`). */
export function cudaVersionString(version: number): string {
  return `${Math.floor(version / 1000)}.${Math.floor((version % 1000) / 10)}`;
}

/** NVML profile names read `MIG 1g.10gb`; the rest of the world says `1g.10gb`. */
export function migProfileName(nvmlName: string): string {
  return nvmlName.replace(/^MIG\s+/, '').trim();
}

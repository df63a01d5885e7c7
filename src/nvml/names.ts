/** nvmlDeviceArchitecture_t → the names NVIDIA's DRA driver publishes (users' CEL compares them). */
const ARCHITECTURES: Record<number, string> = {
  2: 'Kepler',
  3: 'Maxwell',
  4: 'Pascal',
  5: 'Volta',
  6: 'Turing',
  7: 'Ampere',
  8: 'Ada',
  9: 'Hopper',
  10: 'Blackwell',
};

/** nvmlBrandType_t → name. */
const BRANDS: Record<number, string> = {
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

export function architectureName(arch: number): string {
  return ARCHITECTURES[arch] ?? 'Unknown';
}

export function brandName(brand: number): string {
  return BRANDS[brand] ?? 'Unknown';
}

/** nvmlDeviceAddressingMode_t → name; NONE (0) means "not a coherent-memory platform". */
export function addressingModeName(mode: number): string | undefined {
  if (mode === 1) return 'HMM';
  if (mode === 2) return 'ATS';
  return undefined;
}

/** CUDA driver version integer (13000) → `major.minor` (`13.0`). */
export function cudaVersionString(version: number): string {
  return `${Math.floor(version / 1000)}.${Math.floor((version % 1000) / 10)}`;
}

/** NVML profile names read `MIG 1g.10gb`; the rest of the world says `1g.10gb`. */
export function migProfileName(nvmlName: string): string {
  return nvmlName.replace(/^MIG\s+/, '').trim();
}

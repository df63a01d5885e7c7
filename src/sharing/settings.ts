/**
 * A device's sharing settings in the one normalized form the driver stores in its checkpoint and
 * applies: both config formats (ours and NVIDIA's, driver/opaqueConfig.ts) decode to it.
 */
export type MpsSettings = {
  readonly defaultActiveThreadPercentage?: number;
  /** The quantity string as given (a number is kept as its decimal string). */
  readonly defaultPinnedDeviceMemoryLimit?: string;
  /** Key as given (an index among the config's devices, or a UUID) → quantity. */
  readonly defaultPerDevicePinnedMemoryLimit?: Readonly<Record<string, string>>;
  readonly multiUser?: boolean;
};

export interface SharingSettings {
  readonly strategy: 'TimeSlicing' | 'MPS';
  /** TimeSlicing on a full GPU only; `Default` when unset. */
  readonly interval?: 'Default' | 'Short' | 'Medium' | 'Long';
  /** MPS only; absent when no setting is given. */
  readonly mps?: MpsSettings;
}

/**
 * The checkpoint document: what this driver has prepared on this node, so that repeated and
 * post-restart calls are answered from facts, and a crash mid-prepare can be undone.
 *
 * Compatibility rules (the NVIDIA driver's users lost nodes to a checksum over re-marshalled
 * JSON, #1080; we do not repeat that):
 * - There is no checksum. Atomic replace (temp + fsync + rename) is what guards against torn
 *   writes; a file that does not parse is quarantined, not fatal.
 * - Readers ignore fields they do not know and writers keep them: every object is parsed
 *   "loose" and rewritten from the parsed object, so a downgrade followed by an upgrade loses
 *   nothing a newer version stored.
 * - `version` is the writer's format version. A writer that makes a change older readers would
 *   misread (not merely an added field) must raise `minReaderVersion`; a reader does not guess
 *   at a document whose `minReaderVersion` is above its own version: it keeps the file aside and
 *   rebuilds from the API, as for a corrupt one (a downgrade must not crash-loop).
 * - Adding an optional field never changes either number.
 * - A claim `state` this version does not know is treated as PrepareStarted (rolled back, so
 *   the kubelet's retry prepares it afresh).
 */
import * as z from 'zod';

export const CHECKPOINT_KIND = 'GpuDraCheckpoint';
export const CHECKPOINT_VERSION = 1;
export const CHECKPOINT_MIN_READER_VERSION = 1;
export const CHECKPOINT_FILE = 'checkpoint.json';

/**
 * `UnprepareStarted` marks a claim whose sharing is being undone; readers (this one and older
 * ones, which do not know it) treat it as PrepareStarted and roll it back.
 */
export type ClaimState = 'PrepareStarted' | 'PrepareCompleted';

const sharingSchema = z.looseObject({
  strategy: z.string(),
  interval: z.string().optional(),
  mps: z.looseObject({}).optional(),
});

export const checkpointDeviceSchema = z.looseObject({
  requestNames: z.array(z.string()).default([]),
  poolName: z.string(),
  deviceName: z.string(),
  cdiDeviceIds: z.array(z.string()).default([]),
  /** UUID of the GPU/MIG device when prepared: detects a different device under the same name. */
  uuid: z.string().optional(),
  adminAccess: z.boolean().default(false),
  shareId: z.string().optional(),
  /** Bytes of GPU memory the share holds (consumable capacity): checked against the GPU's total. */
  consumedMemoryBytes: z.number().int().nonnegative().optional(),
  sharing: sharingSchema.optional(),
  /**
   * Dynamic MIG: the driver makes this device at prepare and destroys it at unprepare. Recorded
   * before it is made; the instance ids once known.
   */
  migInstance: z
    .looseObject({
      parentUuid: z.string(),
      profileId: z.number().int().nonnegative(),
      placement: z.looseObject({ start: z.number().int().nonnegative(), size: z.number().int().positive() }),
      gpuInstanceId: z.number().int().nonnegative().optional(),
      computeInstanceId: z.number().int().nonnegative().optional(),
    })
    .optional(),
});

export const checkpointClaimSchema = z.looseObject({
  state: z.string(),
  namespace: z.string().default(''),
  name: z.string().default(''),
  /** `resource.kubernetes.io/pod-claim-name` of a claim made from a template: its metadata path. */
  podClaimName: z.string().optional(),
  /** Spec file name in the CDI root (derived from the UID; kept so rollback needs nothing else). */
  cdiSpecFile: z.string().optional(),
  devices: z.array(checkpointDeviceSchema).default([]),
  /** Ids of the claim's MPS daemons (sharing/plan.ts), recorded before they are created. */
  mpsDaemons: z.array(z.string()).optional(),
  /** The spec exactly as written; lets a restart restore a lost file without recomputing. */
  cdiSpec: z.unknown().optional(),
  /** ISO time of the last state change (informational). */
  updated: z.string().optional(),
  /**
   * Set on a claim known only by its CDI spec after the checkpoint was lost (driver/rebuild.ts,
   * heldFromSpec): its devices are held, and its next prepare rebuilds the record from the API.
   */
  heldFromSpec: z.boolean().optional(),
});

/**
 * Set while the claims of a checkpoint that could not be read (corrupt, or too new) are being
 * rebuilt from the API (driver/state.ts, rebuildFromSpecs): durable, so a restart midway goes on
 * rebuilding instead of taking an empty document at its word and sweeping what running pods use.
 */
export const rebuildMarkerSchema = z.looseObject({
  /** `corrupt` or `tooNew`. */
  reason: z.string(),
  /** What was wrong with the file, for the Event and the log. */
  problem: z.string(),
  /** Where the unreadable file was kept. */
  movedTo: z.string(),
  /** ISO time it was found. */
  since: z.string(),
});

export const checkpointSchema = z.looseObject({
  kind: z.literal(CHECKPOINT_KIND),
  version: z.number().int().min(1),
  minReaderVersion: z.number().int().min(1).default(1),
  /** Kernel boot id when the claims were prepared; a different one means the node rebooted. */
  bootId: z.string().optional(),
  claims: z.record(z.string(), checkpointClaimSchema).default({}),
  rebuild: rebuildMarkerSchema.optional(),
});

export type CheckpointDevice = z.infer<typeof checkpointDeviceSchema>;
export type CheckpointClaim = z.infer<typeof checkpointClaimSchema>;
export type CheckpointDocument = z.infer<typeof checkpointSchema>;
export type RebuildMarker = z.infer<typeof rebuildMarkerSchema>;

export function emptyCheckpoint(bootId?: string): CheckpointDocument {
  return {
    kind: CHECKPOINT_KIND,
    version: CHECKPOINT_VERSION,
    minReaderVersion: CHECKPOINT_MIN_READER_VERSION,
    ...(bootId ? { bootId } : {}),
    claims: {},
  };
}

export function claimState(claim: Pick<CheckpointClaim, 'state'>): ClaimState {
  return claim.state === 'PrepareCompleted' ? 'PrepareCompleted' : 'PrepareStarted';
}

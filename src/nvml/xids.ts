/**
 * What the XIDs this driver taints for (and the common application ones) mean, and what to do,
 * in short, after NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors). `gpu-dra doctor`
 * explains each XID taint with it, and the health stream's messages name it (healthReport.ts);
 * an XID not listed is explained by pointing at the catalog.
 */
export interface XidInfo {
  readonly meaning: string;
  /** The usual next step. */
  readonly action: string;
}

const RESET = 'drain the GPU, reset it (`nvidia-smi -r -i <index>`) or reboot the node';

export const XID_MEANINGS: Readonly<Record<number, XidInfo>> = {
  8: {
    meaning: 'GPU stopped processing (channel idle timeout)',
    action: 'restart the application; if it repeats, ' + RESET,
  },
  13: {
    meaning: 'graphics engine exception (usually an application fault)',
    action: 'check the application',
  },
  31: { meaning: 'GPU memory page fault (usually an application fault)', action: 'check the application' },
  32: {
    meaning: 'invalid or corrupted push buffer stream',
    action: 'check the application; if it repeats, ' + RESET,
  },
  38: { meaning: 'driver firmware error', action: RESET },
  43: {
    meaning: 'GPU stopped processing a faulting application',
    action: 'none for the GPU; check the application',
  },
  45: {
    meaning: 'preemptive cleanup after an earlier error or a killed application',
    action: 'look for the XID before it',
  },
  46: { meaning: 'GPU stopped processing', action: RESET },
  48: {
    meaning: 'double-bit ECC error: uncorrectable memory error',
    action: RESET + '; repeated DBEs mean the GPU needs service',
  },
  61: { meaning: 'internal micro-controller breakpoint/warning', action: RESET },
  62: { meaning: 'internal micro-controller halt', action: RESET },
  63: { meaning: 'ECC page retirement or row remapping recorded', action: RESET + ' to apply the remapping' },
  64: { meaning: 'ECC page retirement or row remapping failed', action: 'the GPU needs service; ' + RESET },
  68: {
    meaning: 'video decoder (NVDEC) exception (usually an application fault)',
    action: 'check the application',
  },
  69: { meaning: 'graphics engine class error', action: RESET },
  74: { meaning: 'NVLink error', action: RESET + '; if it repeats, check the NVLink/NVSwitch fabric' },
  79: {
    meaning: 'GPU has fallen off the bus',
    action: 'reboot the node; if it repeats, the GPU or its slot needs service',
  },
  92: { meaning: 'high single-bit ECC error rate', action: 'watch it; plan service for the GPU' },
  94: {
    meaning: 'contained ECC error: the affected application was stopped',
    action: RESET + ' to remap the memory row',
  },
  95: { meaning: 'uncontained ECC error: every application on the GPU is affected', action: RESET },
  109: { meaning: 'context switch timeout (usually an application fault)', action: 'check the application' },
  119: { meaning: 'GSP (GPU System Processor) RPC timeout', action: RESET },
  120: { meaning: 'GSP error', action: RESET },
  154: { meaning: 'GPU recovery action changed: the driver asks for a reset or reboot', action: RESET },
};

export function xidInfo(xid: number): XidInfo {
  return (
    XID_MEANINGS[xid] ?? {
      meaning: `XID ${String(xid)} (not in gpu-dra's table)`,
      action:
        "look it up in NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors); after a GPU reset, clear the taint",
    }
  );
}

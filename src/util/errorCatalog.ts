/**
 * Every error code gpu-dra reports, what a user sees and what to do about it. Codes are stable:
 * they appear in logs, in a claim's error string (`kubectl describe pod`), in metrics and in the
 * README's troubleshooting table, which test/unit/errors.test.ts keeps equal to this catalog.
 * A code is never reused for another meaning; remove one only with its last thrower.
 */
export interface ErrorDoc {
  /** Where it shows and what it means, in the words a user searches for. */
  readonly means: string;
  /** What to do about it. */
  readonly action: string;
}

export const ERROR_CATALOG = {
  CONFIG_INVALID: {
    means: 'a flag, environment variable, kubeconfig or input file is invalid; the message names the field',
    action: 'fix the named field; `gpu-dra <command> --help` lists the flags and their environment twins',
  },
  OPAQUE_CONFIG_INVALID: {
    means:
      "a claim's or DeviceClass's opaque `parameters` for this driver are invalid; every bad field is named",
    action: 'fix the claim (or class) config; examples/claims/ has valid ones',
  },
  CLAIM_REF_INVALID: {
    means:
      "a claim reference lacks uid, namespace or name, is over a Kubernetes limit, is no valid Kubernetes name, or isn't its UID's claim",
    action: 'a kubelet bug or a foreign client on dra.sock; check who talks to the socket',
  },
  CALL_TOO_LARGE: {
    means:
      'a NodePrepareResources or NodeUnprepareResources call names more claims than one call may, or its reply would exceed the 4 MiB the kubelet receives',
    action:
      'nothing was prepared; the kubelet sends one call per pod, so a real pod never names this many claims: check who talks to dra.sock',
  },
  CLAIM_UID_INVALID: {
    means: 'a claim UID is not a UUID, so no file may be named after it',
    action: 'a kubelet bug or a foreign client on dra.sock; nothing was written',
  },
  CLAIM_FETCH_FAILED: {
    means: 'the ResourceClaim could not be read from the apiserver',
    action:
      "check the apiserver's reachability and the plugin's RBAC (get resourceclaims); the kubelet retries",
  },
  CLAIM_REPLACED: {
    means: "the claim was deleted and re-created: its UID differs from the kubelet's",
    action: 'none: the kubelet retries with the new claim',
  },
  CLAIM_NOT_ALLOCATED: {
    means: 'the claim has no allocation yet (or it was removed)',
    action: 'none: the kubelet only asks for allocated claims; if it persists, see `gpu-dra explain`',
  },
  CLAIM_NO_DEVICES: {
    means: "the claim's allocation holds no device of this driver",
    action: 'check the DeviceClass and `--driver-name`: the class must select this driver',
  },
  CLAIM_ALLOCATION_INVALID: {
    means:
      "the claim's allocation holds a value this driver cannot use (a consumed capacity that is not a byte count); the message names the field",
    action: 'a scheduler bug or a hand-edited claim status: delete the pod so the claim is allocated afresh',
  },
  CLAIM_WRONG_POOL: {
    means: "the claim's devices belong to another node's pool",
    action: 'a scheduler/kubelet mismatch; delete the pod so it is scheduled again',
  },
  DEVICE_UNKNOWN: {
    means: 'an allocated device does not exist on this node, even after re-discovery',
    action:
      'the GPU or MIG device went away after allocation; `gpu-dra discover` on the node shows what is there',
  },
  DEVICE_CHANGED: {
    means: 'after a reboot a prepared device is gone or is now another GPU (UUID changed)',
    action: 'the claim is dropped and prepared afresh on the next call; delete the pod if it keeps failing',
  },
  DEVICE_IN_USE: {
    means:
      'the device (or the GPU a MIG device is carved from) is prepared for another claim and no sharing allows both, or shares of a GPU would exceed its memory',
    action:
      'use a sharing config on both claims, or wait for the other claim to go; `kubectl get resourceclaims -A`',
  },
  DEVICE_NODE_MISSING: {
    means: 'a /dev/nvidia* node the device needs is missing on the host',
    action: 'load the NVIDIA driver (nvidia-modprobe, or the GPU operator) and check --dev-root',
  },
  CDI_SPEC_INVALID: {
    means: 'a CDI spec could not be built or its file name is unsafe',
    action: 'a bug: report it with the log line',
  },
  CDI_WRITE_FAILED: {
    means: "the claim's CDI spec could not be written under --cdi-root",
    action: 'check the CDI directory exists, is writable and the disk is not full; nothing was kept',
  },
  CLAIM_STATUS_WRITE_FAILED: {
    means:
      "the claim's status.devices could not be written (logged only: the claim is prepared all the same)",
    action:
      'Forbidden: check the RBAC from deploy/ (resourceclaims/status, resourceclaims/driver); else retried',
  },
  DEVICE_METADATA_FAILED: {
    means:
      "a claim's device metadata file (--device-metadata) could not be built or written; the message says why",
    action: 'check the plugin directory is writable and the disk is not full; nothing was kept',
  },
  CHECKPOINT_UNREADABLE: {
    means: 'the checkpoint file cannot be read, or a corrupt one cannot be kept aside',
    action:
      'check permissions and free space; a corrupt file is kept aside, claims rebuilt from the API (Event CheckpointRebuilt)',
  },
  CHECKPOINT_TOO_NEW: {
    means:
      'the checkpoint was written by a newer gpu-dra (a downgrade); at start it is kept aside and rebuilt from the API',
    action:
      'none after a downgrade: see Event CheckpointRebuilt; upgrading again reads the rebuilt checkpoint',
  },
  CHECKPOINT_REBUILD_PENDING: {
    means: 'the checkpoint was lost and some prepared claims are not yet rebuilt from the API (retryable)',
    action:
      'the kubelet and the plugin retry; check the plugin reaches the apiserver and may get resourceclaims',
  },
  CHECKPOINT_WRITE_FAILED: {
    means: 'the checkpoint could not be written durably',
    action: 'check the plugin directory is writable and the disk is not full; the claim was not prepared',
  },
  SHARING_TOOL_NOT_FOUND: {
    means:
      "a sharing setting needs the host driver's `nvidia-smi` or `nvidia-cuda-mps-control`, which is not under the driver root",
    action: 'check --driver-root (NVIDIA_DRIVER_ROOT) points at the host driver install; nothing was changed',
  },
  SHARING_APPLY_FAILED: {
    means:
      "setting a GPU's time slice or compute mode through `nvidia-smi` failed (its exit code and output are in the message)",
    action:
      'run the command the message names on the node; the claim was left unprepared and the GPU as it was',
  },
  MPS_DAEMON_FAILED: {
    means:
      "the claim's MPS control daemon (a Deployment in the driver's namespace) could not be created, removed or listed",
    action:
      "check the plugin's RBAC (deployments in its namespace) and --namespace/--image; the kubelet retries",
  },
  MPS_DAEMON_NOT_READY: {
    means:
      "the claim's MPS control daemon did not report ready in time; the message names it and holds its last log lines",
    action:
      '`kubectl -n <namespace> describe deploy <name>` and its pod: image pull, node taints, or the MPS log lines quoted',
  },
  MIG_CREATE_FAILED: {
    means:
      'dynamic MIG: NVML could not create the MIG device the claim was allocated (its GPU instance or compute instance); nothing of it was left behind',
    action:
      'read the NVML error in the message: INSUFFICIENT_RESOURCES means the placement is taken (an instance made outside the driver: `nvidia-smi mig -lgi`); the kubelet retries',
  },
  MIG_DESTROY_FAILED: {
    means:
      'dynamic MIG: NVML could not destroy a MIG device the driver made; IN_USE means a process still runs in it',
    action:
      'the kubelet retries the unprepare; find the process with `nvidia-smi` on the node, or destroy the instance with `nvidia-smi mig -dci/-dgi`',
  },
  NVML_LIBRARY_NOT_FOUND: {
    means: 'libnvidia-ml.so.1 (the NVIDIA driver library) could not be loaded',
    action:
      'install the NVIDIA driver, or point at it with --nvml-lib or NVIDIA_DRIVER_ROOT; without a GPU try `gpu-dra demo`',
  },
  NVML_CALL_FAILED: {
    means: 'an NVML call failed; the message names the call and NVML return code (e.g. GPU_IS_LOST)',
    action:
      'GPU_IS_LOST: the GPU fell off the bus, reset or replace it; other codes: check `nvidia-smi` on the node',
  },
  NVML_EVENTS_UNSUPPORTED: {
    means: 'a GPU does not deliver XID events, so it is not watched for errors',
    action: 'none needed; health then comes from periodic re-discovery only',
  },
  RESOURCESLICE_INVALID: {
    means: 'a device cannot be published: a value is outside the ResourceSlice API limits',
    action: 'a bug or an unusual GPU: report it with the named device and field',
  },
  PUBLISHER_STARTED: {
    means: 'the ResourceSlice publisher was started twice',
    action: 'a bug: report it',
  },
  PUBLISHER_STOPPED: {
    means: 'the ResourceSlice publisher stopped before the change was written (the plugin is shutting down)',
    action: 'none: the next plugin instance publishes',
  },
  APISERVER_VERSION_UNKNOWN: {
    means:
      'with --mig-partitioning=dynamic, the apiserver version (GET /version) could not be read; it decides how MIG counter sets are laid out in ResourceSlices',
    action:
      "check the apiserver's reachability; publishing is retried. /version is open to every authenticated user",
  },
  KUBE_API_ERROR: {
    means: 'the apiserver answered with an error status (the message holds status and reason)',
    action: 'Forbidden: check the RBAC from deploy/; Conflict and 5xx are retried',
  },
  KUBE_TOKEN_UNREADABLE: {
    means:
      "the bearer token file (the pod's service-account token, or a kubeconfig tokenFile) cannot be read",
    action: 'check the token mount (automountServiceAccountToken) or the tokenFile path',
  },
  KUBE_CREDENTIALS_FAILED: {
    means:
      "no credentials for the kubeconfig's user: its exec or auth-provider plugin failed, or a cert or token file is unreadable (the plugin's stderr is in the message)",
    action:
      "run the plugin's command yourself (e.g. log in to the cloud CLI) or fix the file the message names",
  },
  KUBE_REQUEST_FAILED: {
    means: 'the apiserver could not be reached or did not answer in time',
    action:
      'check the network path to the apiserver and the kubeconfig/in-cluster settings; requests are retried',
  },
  SOCKET_PATH_OCCUPIED: {
    means: 'a plugin socket path exists and is not a socket',
    action: 'remove or move the file named in the message; gpu-dra never deletes a non-socket',
  },
  SOCKET_PATH_TOO_LONG: {
    means: 'a plugin socket path exceeds the 107-byte Unix socket limit',
    action: 'use shorter --kubelet-plugins-dir / --kubelet-registry-dir / --driver-name',
  },
  SOCKET_BIND_FAILED: {
    means: 'a plugin socket could not be created',
    action: 'check the kubelet plugin directories are mounted and writable',
  },
  ADMIN_SOCKET_FAILED: {
    means:
      "`gpu-dra taints` could not reach the plugin's admin socket (`<plugins dir>/<driver>/admin.sock`), or the plugin refused the request",
    action:
      'run it on the node (or `kubectl exec` into the plugin pod) as root, with the same --kubelet-plugins-dir and --driver-name as the plugin',
  },
  FILE_LOCK_FAILED: {
    means:
      'the lock file the plugin instances of a node share (`<plugins dir>/<driver>/*.lock`) could not be opened or locked, or libc could not be loaded for flock(2)',
    action: 'check that the plugins directory is writable and on a local filesystem that supports flock',
  },
  PATH_ESCAPES_ROOT: {
    means: 'a path would leave the directory it must stay in (e.g. `..` below a host root)',
    action: 'check the named root flag; nothing outside it was touched',
  },
  FAKE_NVML_BUILD_FAILED: {
    means: 'the simulated node could not build its fake libnvidia-ml.so.1',
    action: 'install gcc (and libc headers) to run `gpu-dra demo` or the tests',
  },
  FAKE_NVML_SOURCE_NOT_FOUND: {
    means: "the fake NVML's C source is not where the package ships it",
    action: 'reinstall gpu-dra; the package is incomplete',
  },
  FAKE_NVML_NO_COMPILER: {
    means: 'no C compiler (cc/gcc) to build the fake NVML for the simulated node',
    action: 'install gcc (apt-get install gcc libc6-dev) to run `gpu-dra demo` or the tests',
  },
  FAKE_NVML_PROFILE_NOT_FOUND: {
    means: 'no simulated-node profile has that name',
    action: 'pick one of the profiles the message lists',
  },
  FAKE_NVML_CONFIG_INVALID: {
    means: 'a fake NVML profile file is not valid JSON or not a valid profile',
    action: 'fix the file named in the message',
  },
  INTERNAL: {
    means: 'an unexpected failure with no code of its own; the message and the logged cause say what failed',
    action: 'a bug: report it with the log lines around it (the plugin logs the full cause chain)',
  },
} as const satisfies Record<string, ErrorDoc>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

/** The DRA driver name when none is configured (`--driver-name gpu.nvidia.com` is the drop-in for NVIDIA's). */
export const DEFAULT_DRIVER_NAME = 'gpu.dra.dev';

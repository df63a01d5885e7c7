/**
 * The half of the driver that serves the kubelet: device state with its checkpoint and CDI
 * specs, the gRPC sockets, the HTTP endpoints. runDriver imports this module once the first
 * ResourceSlice write is in flight: gRPC and protobuf take tens of milliseconds to evaluate,
 * and the node's slices need none of it.
 */
export { startHttp } from './httpServer.js';
export { adminSocketPath, startAdminSocket } from './adminSocket.js';
export { KubeletClient } from '../kubelet/client.js';
export { pluginDataDir, startKubeletPlugin } from '../kubelet/plugin.js';
export { createDeviceState } from '../driver/state.js';
export { ClaimStatusWriter } from '../driver/statusWriter.js';
export { SharingApplier } from '../sharing/apply.js';
export { MpsDaemons } from '../sharing/mps.js';
export { createNvidiaSmi } from '../sharing/driverTools.js';
export { openMigInstanceControl } from '../nvml/migInstances.js';

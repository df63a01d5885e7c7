/**
 * The half of the driver that serves the kubelet: device state with its checkpoint and CDI
 * specs, the gRPC sockets, the HTTP endpoints. runDriver imports this module once the first
 * ResourceSlice write is in flight: gRPC and protobuf take tens of milliseconds to evaluate,
 * and the node's slices need none of it.
 */
export { credentials } from '@grpc/grpc-js';
export { CdiStore } from '../cdi/store.js';
export { CheckpointStore } from '../checkpoint/store.js';
export { CHECKPOINT_FILE } from '../checkpoint/schema.js';
export { startHttp } from './httpServer.js';
export { pluginDataDir, startKubeletPlugin } from '../kubelet/plugin.js';
export { loadProtos } from '../kubelet/proto.js';
export { DeviceState } from '../driver/state.js';

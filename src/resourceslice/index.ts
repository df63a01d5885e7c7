export * from './model.js';
export * from './names.js';
export * from './values.js';
export * from './publisher.js';
export * from './discovery.js';
export * from './kubeclient.js';

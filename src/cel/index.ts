export * from './quantity.js';
export * from './semver.js';
export * from './device.js';
export * from './rewrite.js';
export * from './env.js';
export * from './explain.js';
export * from './classes.js';
export * from './cost.js';

/** The remote engine: our routes in front of other inference servers (README "Scaling out"). */
export { createRemoteEngine, RemoteEngine, type UpstreamStatus } from './remote-engine.js';
export type { Dialect, RemoteEngineOptions, RemoteMetricsOptions, UpstreamOptions } from './options.js';

import { Context, Layer } from "effect"
import { type ClusterConfig, defaultClusterConfig } from "./schema.js"

/** The one decoded configuration of this process, provided as a service. */
export class ClusterConfigService extends Context.Tag("config/ClusterConfig")<ClusterConfigService, ClusterConfig>() {
  static readonly layer = (config: ClusterConfig) => Layer.succeed(ClusterConfigService, config)
  /** The contract's defaults with a few fields changed: for tests. */
  static readonly layerTest = (patch: (defaults: ClusterConfig) => ClusterConfig = (c) => c) =>
    Layer.succeed(ClusterConfigService, patch(defaultClusterConfig()))
}

import { Schema } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../../src/config/schema.js"
import { RequestId } from "../../../src/domain/ids.js"
import type { InferenceRequest } from "../../../src/domain/inference.js"

type EngineConfig = ClusterConfig["worker"]["engine"]

/**
 * A streamed inference request with the id "r1", as the worker hands it to an engine; `fields` are
 * the rest (each engine test file has its own model, prompt and limits).
 */
export const engineRequest = (fields: Omit<InferenceRequest, "requestId" | "stream"> & Partial<InferenceRequest>): InferenceRequest => ({
  requestId: Schema.decodeSync(RequestId)("r1"),
  stream: true,
  ...fields
})

/** The default config with `worker.engine` changed by `patch`: what an engine's Live layer reads. */
export const engineConfigLayer = (patch: (engine: EngineConfig) => EngineConfig) =>
  ClusterConfigService.layerTest((c) => ({ ...c, worker: { ...c.worker, engine: patch(c.worker.engine) } }))

/** `engineConfigLayer` with some of `worker.engine.synthetic` changed. */
export const syntheticConfigLayer = (patch: Partial<EngineConfig["synthetic"]>) =>
  engineConfigLayer((engine) => ({ ...engine, synthetic: { ...engine.synthetic, ...patch } }))

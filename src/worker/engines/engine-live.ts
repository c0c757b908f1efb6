import type * as HttpClient from "@effect/platform/HttpClient"
import type { CommandExecutor } from "@effect/platform/CommandExecutor"
import { Effect, Layer } from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import type { InferenceEngine } from "./inference-engine.js"
import { MlxLmEngineLive } from "./mlx-lm-engine.js"
import { OpenAiEngineLive } from "./openai-engine.js"
import { SyntheticEngineLive } from "./synthetic-engine.js"

/** The engine named by `worker.engine.type`. */
export const InferenceEngineLive: Layer.Layer<
  InferenceEngine,
  never,
  ClusterConfigService | HttpClient.HttpClient | CommandExecutor
> = Layer.unwrapEffect(
  Effect.map(ClusterConfigService, (config) => {
    switch (config.worker.engine.type) {
      case "synthetic":
        return SyntheticEngineLive
      case "openai":
        return OpenAiEngineLive
      case "mlx-lm":
        return MlxLmEngineLive
    }
  })
)

import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { Registry } from "../controller/registry.js"
import * as State from "../controller/registry-state.js"
import { ServedApi } from "../domain/api.js"
import type { ModelList } from "../domain/openai.js"

/**
 * `GET /v1/models`: every model some online worker serves, from the registry's index (one pass over
 * the models, not over the workers). The inference routes are served by `inference-lane.ts`.
 */
export const ModelsHandlersLive = HttpApiBuilder.group(ServedApi, "models", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    return handlers.handle("listModels", () =>
      Effect.map(
        registry.state,
        (state): ModelList => ({
          object: "list",
          data: State.servedModels(state).map(({ model, since }) => ({
            id: model,
            object: "model",
            created: Math.floor(since / 1000),
            owned_by: model.split("/")[0] ?? "cluster"
          }))
        })
      )
    )
  })
)

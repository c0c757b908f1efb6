import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, HashMap } from "effect"
import { Registry } from "../controller/registry.js"
import * as State from "../controller/registry-state.js"
import { ServedApi } from "../domain/api.js"
import { ModelNotFound, RouteNotFound } from "../domain/errors.js"
import type { ModelList } from "../domain/openai.js"
import { errorResponse } from "./error-response.js"

/**
 * `GET /v1/models` and `GET /v1/models/{id}`: the models some online worker serves, from the
 * registry's index (one pass over the models, not over the workers). The inference routes are
 * served by `inference-lane.ts`.
 */

type ModelObject = ModelList["data"][number]

const modelObjects = (state: State.RegistryState): ReadonlyArray<ModelObject> =>
  State.servedModels(state).map(({ model, since }) => ({
    id: model,
    object: "model",
    created: Math.floor(since / 1000),
    owned_by: model.split("/")[0] ?? "cluster"
  }))

export const ModelsHandlersLive = HttpApiBuilder.group(ServedApi, "models", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    return handlers.handle("listModels", () =>
      Effect.map(registry.state, (state): ModelList => ({ object: "list", data: modelObjects(state) }))
    )
  })
)

const MODELS_PREFIX = "/v1/models/"

/** The model id of a `/v1/models/...` target: the rest of the path, `%2F` or plain `/` alike. */
export const modelIdOf = (url: string): string | undefined => {
  const path = url.split("?")[0] ?? ""
  if (!path.startsWith(MODELS_PREFIX)) return undefined
  try {
    return decodeURIComponent(path.slice(MODELS_PREFIX.length))
  } catch {
    return undefined
  }
}

/**
 * `GET /v1/models/{id}` (`openai.models.retrieve`): one model object, or 404 `model_not_found`.
 * A raw route with a wildcard, because model ids hold `/` (`mlx-community/Llama-3.2-3B-...`), sent
 * as is by curl and as `%2F` by the OpenAI SDKs; the HttpApi documents it (`ModelLookupGroup`).
 */
export const ModelRouteLive = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    yield* router.add("GET", "/v1/models/*", (request) =>
      Effect.map(registry.state, (state): HttpServerResponse.HttpServerResponse => {
        const id = modelIdOf(request.url) ?? ""
        const found = modelObjects(state).find((m) => m.id === id)
        if (found !== undefined) return HttpServerResponse.unsafeJson(found)
        return errorResponse(new ModelNotFound({ model: id, offline: HashMap.has(state.knownModels, id) }))
      })
    )
  })
)

/** Every other method and path: OpenAI's 404, `Invalid URL (METHOD /path)`, not an empty body. */
export const NotFoundRouteLive = HttpLayerRouter.add("*", "/*", (request: HttpServerRequest.HttpServerRequest) =>
  Effect.succeed(errorResponse(new RouteNotFound({ method: request.method, path: request.url.split("?")[0] ?? "/" })))
)

import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as OpenApi from "@effect/platform/OpenApi"
import { ParseResult, Schema, SchemaAST } from "effect"
import { ClusterStatus } from "./cluster.js"
import { DashboardSnapshot } from "./dashboard.js"
import { VERSION } from "../version.js"
import { ModelNotFound, OpenAiErrorBody, toOpenAiError, WorkerNotFound } from "./errors.js"
import { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion, CompletionRequest, ModelList, ModelObject } from "./openai.js"
import { WorkerInfo } from "./worker.js"

/**
 * The controller's HTTP contract (docs/contract.md §6) as an `HttpApi`: it serves the routes and generates
 * `/openapi.json`. The OpenAI routes read their own bodies (so that bad JSON and schema failures
 * get OpenAI-shaped 400s, see `src/http/openai-handlers.ts`); their payload and error schemas here
 * document them.
 */

/**
 * An error class on the wire as the OpenAI body, with the status its annotations give. One way
 * only: the body is what OpenAI clients read, and it does not carry the error's fields (a typed
 * client of the cluster uses `/rpc`, whose errors are the classes themselves).
 */
const asOpenAiBody = <A extends WorkerNotFound | ModelNotFound, I>(errorSchema: Schema.Schema<A, I>) =>
  Schema.transformOrFail(OpenAiErrorBody, Schema.typeSchema(errorSchema), {
    strict: true,
    decode: (body, _options, ast) =>
      ParseResult.fail(new ParseResult.Type(ast, body, `an OpenAI error body cannot be read back as ${errorSchema.ast}; use /rpc for typed errors`)),
    encode: (error) => ParseResult.succeed(toOpenAiError(error).body)
  }).annotations({ [HttpApiSchema.AnnotationStatus]: HttpApiSchema.getStatusErrorAST(errorSchema.ast) })

export const WorkerNotFoundBody = asOpenAiBody(WorkerNotFound)

export const ModelNotFoundBody = asOpenAiBody(ModelNotFound)

/** Documentation of the error statuses the OpenAI routes answer with, all as the OpenAI body. */
const documentedError = (status: number, identifier: string) =>
  OpenAiErrorBody.annotations({ identifier, [HttpApiSchema.AnnotationStatus]: status })

/**
 * The statuses the OpenAI routes answer with, each documented as the OpenAI body. Spelled out per
 * endpoint (two of them) rather than folded over a list: `addError`'s typed chain needs no cast.
 */
const withOpenAiErrors = <Name extends string, Path, UrlParams, Payload, Headers, Success, Error, R, RE>(
  endpoint: HttpApiEndpoint.HttpApiEndpoint<Name, "POST", Path, UrlParams, Payload, Headers, Success, Error, R, RE>
) =>
  endpoint
    .addError(documentedError(400, "InvalidRequestError"))
    .addError(documentedError(401, "AuthenticationError"))
    .addError(documentedError(404, "NotFoundError"))
    .addError(documentedError(413, "BodyTooLargeError"))
    .addError(documentedError(429, "RateLimitError"))
    .addError(documentedError(502, "WorkerError"))
    .addError(documentedError(503, "ServiceUnavailableError"))
    .addError(documentedError(504, "TimeoutError"))

/**
 * The inference routes. They are served by the front door's fast lane (`src/http/inference-lane.ts`),
 * not by the HttpApi router: this group documents them in `/openapi.json` and `/docs`.
 */
export class InferenceGroup extends HttpApiGroup.make("inference")
  .add(
    withOpenAiErrors(
      HttpApiEndpoint.post("chatCompletions", "/v1/chat/completions")
        .setPayload(ChatCompletionRequest)
        .addSuccess(ChatCompletion)
        .annotate(OpenApi.Summary, "Create a chat completion (stream: true answers text/event-stream)")
    )
  )
  .add(
    withOpenAiErrors(
      HttpApiEndpoint.post("completions", "/v1/completions")
        .setPayload(CompletionRequest)
        .addSuccess(Completion)
        .annotate(OpenApi.Summary, "Create a completion from a prompt (legacy; stream: true answers text/event-stream)")
    )
  )
  .annotate(OpenApi.Title, "OpenAI-compatible") {}

/** `/v1/models`: served by the HttpApi router. */
export class ModelsGroup extends HttpApiGroup.make("models")
  .add(
    HttpApiEndpoint.get("listModels", "/v1/models")
      .addSuccess(ModelList)
      .annotate(OpenApi.Summary, "Every model that some online worker serves")
  )
  .annotate(OpenApi.Title, "OpenAI-compatible") {}

/**
 * `GET /v1/models/{id}`: served by a raw wildcard route (`src/http/openai-handlers.ts`), because
 * model ids hold `/`; this group documents it.
 */
export class ModelLookupGroup extends HttpApiGroup.make("modelLookup")
  .add(
    HttpApiEndpoint.get("retrieveModel", "/v1/models/:id")
      .setPath(Schema.Struct({ id: Schema.String }))
      .addSuccess(ModelObject)
      .addError(ModelNotFoundBody)
      .annotate(OpenApi.Summary, "One model some online worker serves")
      .annotate(
        OpenApi.Description,
        "The id may contain `/` (`mlx-community/Llama-3.2-3B-Instruct-4bit`), as is or encoded as `%2F`. A model no online worker serves is a 404 `model_not_found`."
      )
  )
  .annotate(OpenApi.Title, "OpenAI-compatible") {}

export class ClusterGroup extends HttpApiGroup.make("cluster")
  .add(HttpApiEndpoint.get("status", "/api/cluster/status").addSuccess(ClusterStatus))
  .add(HttpApiEndpoint.get("workers", "/api/cluster/workers").addSuccess(Schema.Array(WorkerInfo)))
  .add(
    HttpApiEndpoint.get("worker", "/api/cluster/workers/:id")
      .setPath(Schema.Struct({ id: Schema.String }))
      .addSuccess(WorkerInfo)
      .addError(WorkerNotFoundBody)
  )
  .add(
    HttpApiEndpoint.get("dashboard", "/api/cluster/dashboard")
      .addSuccess(DashboardSnapshot)
      .annotate(
        OpenApi.Description,
        "What /dashboard shows, once. GET /api/cluster/events streams the same snapshot as server-sent events (`data: <JSON>`), one per second (`?interval_ms=250..10000`)."
      )
  )
  .annotate(OpenApi.Title, "Cluster") {}

export const ReadyBody = Schema.Struct({
  ready: Schema.Boolean,
  state: Schema.String,
  onlineWorkers: Schema.Number
})

export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  { ready: Schema.Literal(false), state: Schema.String, onlineWorkers: Schema.Number },
  { [HttpApiSchema.AnnotationStatus]: 503 }
) {}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("health", "/health").addSuccess(Schema.Struct({ status: Schema.Literal("ok") })))
  .add(HttpApiEndpoint.get("ready", "/ready").addSuccess(ReadyBody).addError(NotReady))
  .annotate(OpenApi.Title, "Health") {}

/** Adds the SSE response of the streaming routes to the generated document. */
const documentSse = (spec: Record<string, unknown>): Record<string, unknown> => {
  const paths = (spec["paths"] ?? {}) as Record<string, Record<string, { responses?: Record<string, { content?: Record<string, unknown> }> }>>
  for (const path of ["/v1/chat/completions", "/v1/completions"]) {
    const ok = paths[path]?.["post"]?.responses?.["200"]
    if (ok !== undefined) {
      ok.content = {
        ...ok.content,
        "text/event-stream": {
          schema: {
            type: "string",
            description:
              "With `stream: true`: one `data: <chunk JSON>` event per token (" +
              JSON.stringify(ChatCompletionChunk.ast.annotations[SchemaAST.TitleAnnotationId] ?? "chat.completion.chunk") +
              "), a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`. A failure after the first token ends the stream with one `data: {\"error\":{...}}` event and no `[DONE]`."
          }
        }
      }
    }
  }
  return spec
}

/** Routes that need no API key even when `api_keys` are set (see `src/http/protections.ts`). */
const OPEN_PATHS: ReadonlySet<string> = new Set(["/health", "/ready"])

type Operation = { security?: ReadonlyArray<unknown>; responses?: Record<string, { description?: string; content?: Record<string, { schema?: unknown }> }> }

/**
 * What the generator cannot say by itself: the bearer key (so that `/docs` can send one: "Try it
 * out" after "Authorize"), and the error body every route really answers with. A body that fails
 * its schema is an OpenAI `{"error": {...}}` (the inference routes read their own bodies), never
 * the generator's `HttpApiDecodeError`.
 */
const documentErrorsAndSecurity = (spec: Record<string, unknown>): Record<string, unknown> => {
  const paths = (spec["paths"] ?? {}) as Record<string, Record<string, Operation>>
  for (const [path, methods] of Object.entries(paths)) {
    for (const operation of Object.values(methods)) {
      // The generator gives every operation `security: []`, which would override the document's.
      operation.security = OPEN_PATHS.has(path) ? [] : [{ bearerAuth: [] }]
      const bad = operation.responses?.["400"]
      if (bad !== undefined) {
        bad.description = "Invalid request: the OpenAI error body, naming the parameter"
        bad.content = { "application/json": { schema: { $ref: "#/components/schemas/InvalidRequestError" } } }
      }
    }
  }
  const components = (spec["components"] ?? {}) as { schemas?: Record<string, unknown>; securitySchemes?: Record<string, unknown> }
  if (components.schemas !== undefined) {
    // Only the replaced 400s referred to these.
    const { HttpApiDecodeError: _decode, Issue: _issue, PropertyKey: _key, ...schemas } = components.schemas
    components.schemas = schemas
  }
  components.securitySchemes = {
    ...components.securitySchemes,
    bearerAuth: {
      type: "http",
      scheme: "bearer",
      description: "One of `controller.api.api_keys`, as `Authorization: Bearer KEY` (needed only when keys are configured)"
    }
  }
  return { ...spec, components, security: [{ bearerAuth: [] }] }
}

/** The routes the HttpApi router serves. */
export class ServedApi extends HttpApi.make("mlx-cluster")
  .add(ModelsGroup)
  .add(ClusterGroup)
  .add(HealthGroup) {}

/** The whole HTTP API as documented at `/openapi.json` and `/docs`. */
export class ClusterApi extends HttpApi.make("mlx-cluster")
  .add(InferenceGroup)
  .add(ModelsGroup)
  .add(ModelLookupGroup)
  .add(ClusterGroup)
  .add(HealthGroup)
  .annotate(OpenApi.Title, "mlx-serving cluster")
  .annotate(OpenApi.Version, VERSION)
  .annotate(OpenApi.Description, "One OpenAI-compatible endpoint for a cluster of Apple-Silicon Macs")
  .annotate(OpenApi.Transform, (spec) => documentErrorsAndSecurity(documentSse(spec))) {}

/** The document of `/openapi.json` (and of `/docs`, which builds the same one). */
export const openApiDocument = OpenApi.fromApi(ClusterApi)

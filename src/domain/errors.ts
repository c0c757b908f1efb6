import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import { Schema } from "effect"

/**
 * Errors a client can see: the classes below, and `ErrorTable`, which says for each (by `_tag`)
 * the HTTP status and the OpenAI error `type`/`code` it becomes on the wire. `toOpenAiError` reads
 * the table; each class's HttpApi status annotation (for `/openapi.json`) is read from it too, so
 * adding a client-visible error is a class and a row (the compiler asks for the row).
 */

export interface OpenAiErrorKind {
  readonly status: number
  readonly type: string
  readonly code: string
}

export const ErrorTable = {
  InvalidRequest: { status: 400, type: "invalid_request_error", code: "invalid_request" },
  Unauthorized: { status: 401, type: "authentication_error", code: "invalid_api_key" },
  WorkerNotFound: { status: 404, type: "not_found_error", code: "worker_not_found" },
  BodyTooLarge: { status: 413, type: "invalid_request_error", code: "body_too_large" },
  RateLimited: { status: 429, type: "rate_limit_error", code: "rate_limit_exceeded" },
  QueueFull: { status: 429, type: "rate_limit_error", code: "queue_full" },
  QueueTimeout: { status: 429, type: "rate_limit_error", code: "queue_timeout" },
  ModelNotFound: { status: 404, type: "invalid_request_error", code: "model_not_found" },
  UnsupportedParameter: { status: 400, type: "invalid_request_error", code: "unsupported_parameter" },
  UpstreamRejected: { status: 400, type: "invalid_request_error", code: "upstream_rejected" },
  RouteNotFound: { status: 404, type: "invalid_request_error", code: "unknown_url" },
  NoWorkers: { status: 503, type: "server_error", code: "no_workers" },
  NoSkilledWorker: { status: 503, type: "server_error", code: "no_skilled_worker" },
  WorkersUnavailable: { status: 503, type: "server_error", code: "workers_unavailable" },
  Overloaded: { status: 429, type: "rate_limit_error", code: "overloaded" },
  SlowConsumer: { status: 429, type: "rate_limit_error", code: "slow_consumer" },
  ShuttingDown: { status: 503, type: "server_error", code: "shutting_down" },
  InferenceTimeout: { status: 504, type: "timeout_error", code: "timeout" },
  WorkerFailed: { status: 502, type: "server_error", code: "worker_error" },
  Cancelled: { status: 499, type: "invalid_request_error", code: "cancelled" }
} as const satisfies Record<string, OpenAiErrorKind>

/** The HttpApi status annotation of an error class, from its row. */
const statusOf = (tag: keyof typeof ErrorTable): { readonly [key: symbol]: unknown } => ({
  [HttpApiSchema.AnnotationStatus]: ErrorTable[tag].status
})

export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()(
  "InvalidRequest",
  { message: Schema.String, param: Schema.optional(Schema.String) },
  statusOf("InvalidRequest")
) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  statusOf("Unauthorized")
) {}

export class WorkerNotFound extends Schema.TaggedError<WorkerNotFound>()(
  "WorkerNotFound",
  { workerId: Schema.String },
  statusOf("WorkerNotFound")
) {
  override get message() {
    return `No worker with id "${this.workerId}"`
  }
}

export class BodyTooLarge extends Schema.TaggedError<BodyTooLarge>()(
  "BodyTooLarge",
  {
    limitBytes: Schema.Number,
    /** Why the limit is what it is, when it is not simply `max_body_bytes` (the bus's message size). */
    reason: Schema.optional(Schema.String)
  },
  statusOf("BodyTooLarge")
) {
  override get message() {
    return `Request body is larger than ${this.limitBytes} bytes${this.reason === undefined ? "" : ` (${this.reason})`}`
  }
}

export class RateLimited extends Schema.TaggedError<RateLimited>()(
  "RateLimited",
  { retryAfterSeconds: Schema.Number },
  statusOf("RateLimited")
) {
  override get message() {
    return `Rate limit exceeded; retry after ${this.retryAfterSeconds} s`
  }
}

export class QueueFull extends Schema.TaggedError<QueueFull>()(
  "QueueFull",
  { model: Schema.String, pending: Schema.Number, retryAfterSeconds: Schema.Number },
  statusOf("QueueFull")
) {
  override get message() {
    return `Every worker for "${this.model}" is busy and ${this.pending} requests are already waiting`
  }
}

export class QueueTimeout extends Schema.TaggedError<QueueTimeout>()(
  "QueueTimeout",
  { model: Schema.String, waitedMs: Schema.Number, retryAfterSeconds: Schema.Number },
  statusOf("QueueTimeout")
) {
  override get message() {
    return `Every worker for "${this.model}" stayed busy for ${this.waitedMs} ms`
  }
}

/** At most this many names in a message that lists models: a worker may claim thousands. */
const LISTED_MODELS = 20

const listModels = (models: ReadonlyArray<string>): string =>
  models.length <= LISTED_MODELS
    ? models.join(", ")
    : `${models.slice(0, LISTED_MODELS).join(", ")} and ${models.length - LISTED_MODELS} more`

/**
 * A model no worker has ever registered (a typo, or a model not installed anywhere): not worth a
 * retry. `GET /v1/models/{id}` also answers it for a model only offline workers registered
 * (`offline`), as OpenAI answers a model the caller cannot use.
 */
export class ModelNotFound extends Schema.TaggedError<ModelNotFound>()(
  "ModelNotFound",
  { model: Schema.String, offline: Schema.optional(Schema.Boolean) },
  statusOf("ModelNotFound")
) {
  override get message() {
    return this.offline === true
      ? `The model "${this.model}" is not served now: only offline workers registered it (GET /v1/models lists the models served now)`
      : `The model "${this.model}" does not exist on this cluster: no worker has registered it (GET /v1/models lists the models served now)`
  }
}

/**
 * The request uses something no worker serving its model honours (issue 12): a 400 naming the
 * parameter rather than a field accepted and ignored. `together`: the parameter that was already
 * required when this one left no worker (each is honoured somewhere, never both by one worker).
 */
export class UnsupportedParameter extends Schema.TaggedError<UnsupportedParameter>()(
  "UnsupportedParameter",
  { model: Schema.String, param: Schema.String, feature: Schema.String, together: Schema.optional(Schema.String) },
  statusOf("UnsupportedParameter")
) {
  override get message() {
    const also = this.together === undefined ? "" : ` that also supports '${this.together}'`
    return this.feature === "completions"
      ? `Unsupported endpoint: /v1/completions (a raw prompt, without a chat template) is not supported by any worker serving "${this.model}"${also}; use /v1/chat/completions`
      : `Unsupported parameter: '${this.param}' is not supported by any worker serving "${this.model}"${also}`
  }
}

/**
 * The engine's upstream server refused the request itself (its 4xx: a context too long, an invalid
 * value): the client gets that status, message, code, type and param, and no other worker is tried.
 */
export class UpstreamRejected extends Schema.TaggedError<UpstreamRejected>()(
  "UpstreamRejected",
  {
    workerId: Schema.String,
    status: Schema.Number,
    message: Schema.String,
    code: Schema.String,
    errorType: Schema.optional(Schema.String),
    param: Schema.optional(Schema.String)
  },
  statusOf("UpstreamRejected")
) {}

/** No route for this method and path: OpenAI's own 404 wording. */
export class RouteNotFound extends Schema.TaggedError<RouteNotFound>()(
  "RouteNotFound",
  { method: Schema.String, path: Schema.String },
  statusOf("RouteNotFound")
) {
  override get message() {
    return `Invalid URL (${this.method} ${this.path})`
  }
}

export class NoWorkers extends Schema.TaggedError<NoWorkers>()(
  "NoWorkers",
  { model: Schema.String, retryAfterSeconds: Schema.optionalWith(Schema.Number, { default: () => 5 }) },
  statusOf("NoWorkers")
) {
  override get message() {
    return `No worker is online to serve model "${this.model}"`
  }
}

export class NoSkilledWorker extends Schema.TaggedError<NoSkilledWorker>()(
  "NoSkilledWorker",
  {
    model: Schema.String,
    available: Schema.Array(Schema.String),
    tags: Schema.optional(Schema.Array(Schema.String)),
    retryAfterSeconds: Schema.optionalWith(Schema.Number, { default: () => 5 })
  },
  statusOf("NoSkilledWorker")
) {
  override get message() {
    if (this.tags !== undefined && this.tags.length > 0) {
      return `No online worker can serve model "${this.model}" with tags ${this.tags.join(", ")}`
    }
    const hint = this.available.length > 0 ? ` (served models: ${listModels(this.available)})` : ""
    return `No online worker can serve model "${this.model}"${hint}`
  }
}

/** One worker that was tried for a request and why it did not serve it. */
export const AttemptFailure = Schema.Struct({ workerId: Schema.String, reason: Schema.String })
export type AttemptFailure = typeof AttemptFailure.Type

/** At most this many attempts are spelled out in a message. */
const LISTED_ATTEMPTS = 5

export class WorkersUnavailable extends Schema.TaggedError<WorkersUnavailable>()(
  "WorkersUnavailable",
  { model: Schema.String, attempts: Schema.Array(AttemptFailure), retryAfterSeconds: Schema.optionalWith(Schema.Number, { default: () => 1 }) },
  statusOf("WorkersUnavailable")
) {
  override get message() {
    const listed = this.attempts
      .slice(0, LISTED_ATTEMPTS)
      .map((a) => `${a.workerId}: ${a.reason}`)
      .join("; ")
    const more = this.attempts.length > LISTED_ATTEMPTS ? `; and ${this.attempts.length - LISTED_ATTEMPTS} more` : ""
    return `No worker could serve the request for "${this.model}" (${this.attempts.length} tried: ${listed}${more})`
  }
}

/** The controller is overloaded (its event loop lags past `controller.overload.max_event_loop_lag_ms`): come back soon. */
export class Overloaded extends Schema.TaggedError<Overloaded>()(
  "Overloaded",
  { lagMs: Schema.Number, retryAfterSeconds: Schema.Number },
  statusOf("Overloaded")
) {
  override get message() {
    return `The controller is overloaded (event loop ${Math.round(this.lagMs)} ms behind); retry after ${this.retryAfterSeconds} s`
  }
}

/** The client reads its stream more slowly than the worker writes it, past the per-stream buffer bound. */
export class SlowConsumer extends Schema.TaggedError<SlowConsumer>()(
  "SlowConsumer",
  { limitBytes: Schema.Number },
  statusOf("SlowConsumer")
) {
  override get message() {
    return `The client read too slowly: more than ${this.limitBytes} bytes were waiting to be sent, so the request was stopped`
  }
}

export class ShuttingDown extends Schema.TaggedError<ShuttingDown>()(
  "ShuttingDown",
  { /** The request was running and the drain timeout ended it. */ forced: Schema.optional(Schema.Boolean) },
  statusOf("ShuttingDown")
) {
  override get message() {
    return this.forced === true
      ? "The controller stopped: this request was still running when its drain timeout passed"
      : "The controller is draining and takes no new requests"
  }
}

export const TimeoutPhase = Schema.Literal("first_token", "stream_idle", "request")
export type TimeoutPhase = typeof TimeoutPhase.Type

export class InferenceTimeout extends Schema.TaggedError<InferenceTimeout>()(
  "InferenceTimeout",
  { phase: TimeoutPhase, timeoutMs: Schema.Number, workerId: Schema.optional(Schema.String) },
  statusOf("InferenceTimeout")
) {
  override get message() {
    switch (this.phase) {
      case "first_token":
        return `No first token within ${this.timeoutMs} ms`
      case "stream_idle":
        return `The worker went silent for more than ${this.timeoutMs} ms`
      case "request":
        return `The request did not finish within ${this.timeoutMs} ms`
    }
  }
  get code() {
    return `${this.phase}_timeout`
  }
}

/** The worker reported an error, or was lost (offline, token gap) after streaming began. */
export class WorkerFailed extends Schema.TaggedError<WorkerFailed>()(
  "WorkerFailed",
  { workerId: Schema.String, code: Schema.String, message: Schema.String },
  statusOf("WorkerFailed")
) {}

export class Cancelled extends Schema.TaggedError<Cancelled>()(
  "Cancelled",
  {},
  statusOf("Cancelled")
) {
  override get message() {
    return "The request was cancelled"
  }
}

/** Every error that reaches a client of the inference routes. */
export const InferenceError = Schema.Union(
  InvalidRequest,
  BodyTooLarge,
  ModelNotFound,
  UnsupportedParameter,
  UpstreamRejected,
  Overloaded,
  SlowConsumer,
  NoWorkers,
  NoSkilledWorker,
  WorkersUnavailable,
  ShuttingDown,
  QueueFull,
  QueueTimeout,
  InferenceTimeout,
  WorkerFailed,
  Cancelled
)
export type InferenceError = typeof InferenceError.Type

export type WireError = InferenceError | Unauthorized | WorkerNotFound | RateLimited | RouteNotFound

/** The OpenAI wire body, `{ error: { message, type, code } }`. */
export const OpenAiErrorBody = Schema.Struct({
  error: Schema.Struct({
    message: Schema.String,
    type: Schema.String,
    code: Schema.NullOr(Schema.String),
    param: Schema.optional(Schema.NullOr(Schema.String))
  })
})
export type OpenAiErrorBody = typeof OpenAiErrorBody.Type

/** HTTP status and OpenAI body of a wire error, from `ErrorTable`. */
export const toOpenAiError = (error: WireError): { readonly status: number; readonly body: OpenAiErrorBody } => {
  if (error._tag === "UpstreamRejected") {
    // The upstream's own answer, as it gave it.
    const param = error.param === undefined ? {} : { param: error.param }
    return { status: error.status, body: { error: { message: error.message, type: error.errorType ?? "invalid_request_error", code: error.code, ...param } } }
  }
  // Indexing by every wire `_tag`: a class without its row does not compile.
  const k: OpenAiErrorKind = ErrorTable[error._tag]
  const code = "code" in error && typeof error.code === "string" ? error.code : k.code
  const param = "param" in error && typeof error.param === "string" ? { param: error.param } : {}
  return { status: k.status, body: { error: { message: error.message, type: k.type, code, ...param } } }
}

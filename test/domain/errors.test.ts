import { HttpApiSchema } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema, type SchemaAST } from "effect"
import { BodyTooLarge, Cancelled, ErrorTable, InferenceError, InferenceTimeout, InvalidRequest, ModelNotFound, NoSkilledWorker, NoWorkers, OpenAiErrorBody, Overloaded, QueueFull, QueueTimeout, RateLimited, RouteNotFound, ShuttingDown, SlowConsumer, toOpenAiError, Unauthorized, UnsupportedParameter, UpstreamRejected, type WireError, WorkerFailed, WorkerNotFound, WorkersUnavailable } from "../../src/domain/errors.js"

interface Case {
  readonly error: WireError
  readonly status: number
  readonly type: string
  readonly code: string
  readonly message: string
  readonly param?: string
}

const cases: ReadonlyArray<Case> = [
  {
    error: new ModelNotFound({ model: "m/typo" }),
    status: 404,
    type: "invalid_request_error",
    code: "model_not_found",
    message: 'The model "m/typo" does not exist on this cluster: no worker has registered it (GET /v1/models lists the models served now)'
  },
  {
    error: new ModelNotFound({ model: "m/gone", offline: true }),
    status: 404,
    type: "invalid_request_error",
    code: "model_not_found",
    message: 'The model "m/gone" is not served now: only offline workers registered it (GET /v1/models lists the models served now)'
  },
  {
    error: new Overloaded({ lagMs: 612.4, retryAfterSeconds: 1 }),
    status: 429,
    type: "rate_limit_error",
    code: "overloaded",
    message: "The controller is overloaded (event loop 612 ms behind); retry after 1 s"
  },
  {
    error: new RouteNotFound({ method: "POST", path: "/v1/nope" }),
    status: 404,
    type: "invalid_request_error",
    code: "unknown_url",
    message: "Invalid URL (POST /v1/nope)"
  },
  {
    error: new SlowConsumer({ limitBytes: 1024 }),
    status: 429,
    type: "rate_limit_error",
    code: "slow_consumer",
    message: "The client read too slowly: more than 1024 bytes were waiting to be sent, so the request was stopped"
  },
  {
    error: new UnsupportedParameter({ model: "m", param: "tools", feature: "tools" }),
    status: 400,
    type: "invalid_request_error",
    code: "unsupported_parameter",
    message: `Unsupported parameter: 'tools' is not supported by any worker serving "m"`,
    param: "tools"
  },
  {
    error: new UpstreamRejected({ workerId: "w", status: 422, message: "context too long", code: "context_length_exceeded", errorType: "invalid_request_error", param: "messages" }),
    status: 422,
    type: "invalid_request_error",
    code: "context_length_exceeded",
    message: "context too long",
    param: "messages"
  },
  {
    error: new InvalidRequest({ message: "messages: is missing" }),
    status: 400,
    type: "invalid_request_error",
    code: "invalid_request",
    message: "messages: is missing"
  },
  {
    error: new InvalidRequest({ message: "max_tokens must be positive", param: "max_tokens" }),
    status: 400,
    type: "invalid_request_error",
    code: "invalid_request",
    message: "max_tokens must be positive",
    param: "max_tokens"
  },
  {
    error: new Unauthorized({ message: "Missing API key" }),
    status: 401,
    type: "authentication_error",
    code: "invalid_api_key",
    message: "Missing API key"
  },
  {
    error: new WorkerNotFound({ workerId: "ghost" }),
    status: 404,
    type: "not_found_error",
    code: "worker_not_found",
    message: 'No worker with id "ghost"'
  },
  {
    error: new BodyTooLarge({ limitBytes: 1024 }),
    status: 413,
    type: "invalid_request_error",
    code: "body_too_large",
    message: "Request body is larger than 1024 bytes"
  },
  {
    error: new RateLimited({ retryAfterSeconds: 7 }),
    status: 429,
    type: "rate_limit_error",
    code: "rate_limit_exceeded",
    message: "Rate limit exceeded; retry after 7 s"
  },
  {
    error: new QueueFull({ model: "m", pending: 1000, retryAfterSeconds: 1 }),
    status: 429,
    type: "rate_limit_error",
    code: "queue_full",
    message: 'Every worker for "m" is busy and 1000 requests are already waiting'
  },
  {
    error: new QueueTimeout({ model: "m", waitedMs: 30000, retryAfterSeconds: 1 }),
    status: 429,
    type: "rate_limit_error",
    code: "queue_timeout",
    message: 'Every worker for "m" stayed busy for 30000 ms'
  },
  {
    error: new NoWorkers({ model: "synthetic/demo" }),
    status: 503,
    type: "server_error",
    code: "no_workers",
    message: 'No worker is online to serve model "synthetic/demo"'
  },
  {
    error: new NoSkilledWorker({ model: "mlx-community/Llama-3.2-3B-Instruct-4bit", available: [] }),
    status: 503,
    type: "server_error",
    code: "no_skilled_worker",
    message: 'No online worker can serve model "mlx-community/Llama-3.2-3B-Instruct-4bit"'
  },
  {
    error: new NoSkilledWorker({ model: "gpt-4", available: ["synthetic/demo", "qwen"] }),
    status: 503,
    type: "server_error",
    code: "no_skilled_worker",
    message: 'No online worker can serve model "gpt-4" (served models: synthetic/demo, qwen)'
  },
  {
    error: new WorkersUnavailable({
      model: "m",
      attempts: [
        { workerId: "a", reason: "busy: full" },
        { workerId: "b", reason: "failed (engine_start_failed: mlx_lm.server did not start)" }
      ]
    }),
    status: 503,
    type: "server_error",
    code: "workers_unavailable",
    message: 'No worker could serve the request for "m" (2 tried: a: busy: full; b: failed (engine_start_failed: mlx_lm.server did not start))'
  },
  {
    error: new ShuttingDown(),
    status: 503,
    type: "server_error",
    code: "shutting_down",
    message: "The controller is draining and takes no new requests"
  },
  {
    error: new InferenceTimeout({ phase: "first_token", timeoutMs: 30000 }),
    status: 504,
    type: "timeout_error",
    code: "first_token_timeout",
    message: "No first token within 30000 ms"
  },
  {
    error: new InferenceTimeout({ phase: "stream_idle", timeoutMs: 5000, workerId: "w1" }),
    status: 504,
    type: "timeout_error",
    code: "stream_idle_timeout",
    message: "The worker went silent for more than 5000 ms"
  },
  {
    error: new InferenceTimeout({ phase: "request", timeoutMs: 120000 }),
    status: 504,
    type: "timeout_error",
    code: "request_timeout",
    message: "The request did not finish within 120000 ms"
  },
  {
    // The worker's own code passes through to the client.
    error: new WorkerFailed({ workerId: "w1", code: "engine_error", message: "mlx_lm.server exited" }),
    status: 502,
    type: "server_error",
    code: "engine_error",
    message: "mlx_lm.server exited"
  },
  {
    error: new Cancelled(),
    status: 499,
    type: "invalid_request_error",
    code: "cancelled",
    message: "The request was cancelled"
  }
]

/** The status `HttpApi` itself reads from the error class (what `addError` uses). */
const statusAnnotation = (error: WireError): number =>
  HttpApiSchema.getStatusErrorAST((error.constructor as unknown as { readonly ast: SchemaAST.AST }).ast)

describe("toOpenAiError", () => {
  for (const c of cases) {
    it.effect(`${c.error._tag} → ${c.status} ${c.code}`, () =>
      Effect.sync(() => {
        const { status, body } = toOpenAiError(c.error)
        expect(status).toBe(c.status)
        expect(body).toStrictEqual({
          error: { message: c.message, type: c.type, code: c.code, ...(c.param === undefined ? {} : { param: c.param }) }
        })
        // the body is the OpenAI wire shape
        expect(Schema.decodeUnknownSync(OpenAiErrorBody)(JSON.parse(JSON.stringify(body)))).toStrictEqual(body)
        // the HTTP status annotation agrees with the mapping (an upstream's refusal keeps its own status)
        expect(statusAnnotation(c.error)).toBe(ErrorTable[c.error._tag].status)
      }))
  }

  it.effect("the cases cover every row of ErrorTable (every client-visible error class)", () =>
    Effect.sync(() => {
      expect(new Set(cases.map((c) => c.error._tag))).toEqual(new Set(Object.keys(ErrorTable)))
    }))
})

describe("wire errors as schemas", () => {
  it.effect("every inference error encodes to a tagged object and decodes to its class", () =>
    Effect.sync(() => {
      const inference = cases.map((c) => c.error).filter((e) => Schema.is(InferenceError)(e))
      expect(inference.length).toBeGreaterThanOrEqual(10)
      for (const error of inference) {
        const encoded = JSON.parse(JSON.stringify(Schema.encodeSync(InferenceError)(error))) as { _tag: string }
        expect(encoded._tag).toBe(error._tag)
        const decoded = Schema.decodeUnknownSync(InferenceError)(encoded)
        expect(decoded).toBeInstanceOf(error.constructor)
        expect(decoded.message).toBe(error.message)
        expect(toOpenAiError(decoded)).toStrictEqual(toOpenAiError(error))
      }
    }))

  it.effect("errors are yieldable failures", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(new NoSkilledWorker({ model: "x", available: [] }))
      expect(error._tag).toBe("NoSkilledWorker")
      expect(toOpenAiError(error).status).toBe(503)
    }))
})

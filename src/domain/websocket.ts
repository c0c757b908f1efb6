import { Schema } from "effect"
import { NonNegativeInt, NonNegativeNumber } from "./ids.js"
import { FinishReason } from "./inference.js"
import { SimpleInference } from "./simple-inference.js"

/**
 * The WebSocket protocol of `GET /ws` (docs/contract.md §7). Every frame is one JSON text message.
 *
 * Client → server: `inference` starts a request, `cancel` ends one. Server → client: `token`s in
 * order, then exactly one `done` or `error` per request id. Several requests may run at once on one
 * socket, told apart by `id`; when the client omits it the server assigns one (`ws-1`, `ws-2`, …)
 * and uses it in every reply. Server-only extensions: `done.data` also carries `finishReason`,
 * `promptTokens` and `completionTokens`; `error.id` is `null` when the message that caused it
 * carried no readable id; `ping` is a keep-alive (see `src/http/websocket.ts`) that clients ignore.
 */

/** A client-chosen request id: any non-empty string, scoped to its socket. */
export const WsRequestId = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256))

/** An `inference` frame's `data`: the plain request shared with RPC (`simple-inference.ts`). */
export const WsInferenceData = SimpleInference
export type WsInferenceData = SimpleInference

export const WsInference = Schema.Struct({
  type: Schema.Literal("inference"),
  id: Schema.optional(WsRequestId),
  data: WsInferenceData
})
export type WsInference = typeof WsInference.Type

export const WsCancel = Schema.Struct({
  type: Schema.Literal("cancel"),
  id: WsRequestId
})
export type WsCancel = typeof WsCancel.Type

export const WsClientMessage = Schema.Union(WsInference, WsCancel)
export type WsClientMessage = typeof WsClientMessage.Type

export const WsToken = Schema.Struct({
  type: Schema.Literal("token"),
  id: Schema.String,
  data: Schema.Struct({ token: Schema.String, index: NonNegativeInt })
})

export const WsDone = Schema.Struct({
  type: Schema.Literal("done"),
  id: Schema.String,
  data: Schema.Struct({
    /** Tokens generated for this request (the worker's completion token count). */
    totalTokens: NonNegativeInt,
    /** Milliseconds from the `inference` message to its `done`, measured by the controller. */
    latencyMs: NonNegativeNumber,
    finishReason: FinishReason,
    promptTokens: NonNegativeInt,
    completionTokens: NonNegativeInt,
    /** extension (issue 13): times the stream moved to another worker; absent when it never did. */
    migrations: Schema.optional(NonNegativeInt)
  })
})

export const WsError = Schema.Struct({
  type: Schema.Literal("error"),
  /** `null` when the offending message had no readable id. */
  id: Schema.NullOr(Schema.String),
  /** `code` is the OpenAI error code (`invalid_request`, `cancelled`, `no_skilled_worker`, …). */
  data: Schema.Struct({ code: Schema.String, message: Schema.String })
})

/** Keep-alive, only sent where protocol-level pings are unavailable. */
export const WsPing = Schema.Struct({ type: Schema.Literal("ping") })

export const WsServerMessage = Schema.Union(WsToken, WsDone, WsError, WsPing)
export type WsServerMessage = typeof WsServerMessage.Type

/** A server frame as text (for clients and tests). */
export const WsServerFrame = Schema.parseJson(WsServerMessage)

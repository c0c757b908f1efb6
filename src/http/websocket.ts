import { Cause, Effect, Either, Exit, type Fiber, FiberId, Option, Runtime } from "effect"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { type WebSocket, WebSocketServer } from "ws"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { Router } from "../controller/router.js"
import { guardedDecoder } from "../domain/decode.js"
import { Cancelled, type InferenceError, type InvalidRequest, toOpenAiError, type WireError } from "../domain/errors.js"
import type { RelaySink, RouteRequest } from "../domain/route.js"
import { type WsClientMessage, WsClientMessage as WsClientMessageSchema, type WsInferenceData, type WsServerMessage } from "../domain/websocket.js"
import { simpleToRoute } from "./route-request.js"

/**
 * `GET /ws` (docs/contract.md §7): streaming inference over one WebSocket, served with the `ws` library
 * from the front door's `upgrade` event (after the API key check), not through @effect/platform's
 * Socket: so that frames are size-checked before they are buffered, writes can see how much is
 * waiting (`bufferedAmount`), and protocol pings work from the start.
 *
 * - Frames are handled synchronously in arrival order (so a `cancel` never overtakes the
 *   `inference` it names); each request runs in one fiber (the Router's `execute`), several at once.
 * - A frame that is not valid JSON or fails `WsClientMessage` gets an `error` reply with code
 *   `invalid_request` (and the id when one could be read); the socket stays open. So does an
 *   `inference` whose id is already in flight, or one past `controller.api.ws_max_requests_per_socket`
 *   (`too_many_requests`). Nothing a frame contains can stop the socket's handling of later frames.
 * - A frame larger than `controller.api.max_body_bytes` is refused by the `ws` library before it
 *   is buffered: the socket closes with 1009 ("message too big").
 * - `cancel` interrupts the request (the Router tells the worker `worker.{id}.cancel`) and replies
 *   `error` with code `cancelled`; a `cancel` for an id not in flight is ignored (it may have just
 *   finished). Closing the socket interrupts every request still running the same way.
 * - A socket whose unsent data passes `controller.api.max_buffered_bytes` (a client that stopped
 *   reading) ends the requests that want to write more with `slow_consumer`: memory stays bounded.
 * - Keep-alive: a protocol ping every `controller.api.ws_ping_interval_ms`.
 * - Plain text only: the protocol has no tools, structured output or logprobs (use
 *   `/v1/chat/completions`); a tool call an engine makes anyway is not relayed, its `done` is.
 */

/** The OpenAI error code of a wire error, as `error.data.code` carries it. */
const errorCode = (error: WireError): { readonly code: string; readonly message: string } => {
  const body = toOpenAiError(error).body.error
  return { code: body.code ?? "internal_error", message: body.message }
}

export interface FrameError {
  readonly id: string | null
  readonly message: string
}

const decodeMessage = guardedDecoder(WsClientMessageSchema)

/** Decodes one client frame; on failure, what to tell the client (with the id, if one was readable). */
export const decodeFrame = (text: string): Either.Either<WsClientMessage, FrameError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left({ id: null, message: "message is not valid JSON" })
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left({ id: null, message: 'message must be a JSON object with a "type"' })
  }
  const id = "id" in json && typeof json.id === "string" && json.id.length > 0 && json.id.length <= 256 ? json.id : null
  return Either.mapLeft(decodeMessage(json), (issue) => ({ id, message: `invalid ${issue.path === "" ? "message" : issue.path}: ${issue.message}` }))
}

/** The Router request of one `inference` message; `maxTokens` above the ceiling is an `invalid_request`. */
export const toRouteRequest = (data: WsInferenceData, api: ClusterConfig["controller"]["api"]): Either.Either<RouteRequest, InvalidRequest> =>
  simpleToRoute(data, api, "ws")

const cancelled = errorCode(new Cancelled())

export const makeWebSocketServer = Effect.gen(function* () {
  const router = yield* Router
  const config = yield* ClusterConfigService
  const api = config.controller.api
  const runtime = yield* Effect.runtime<never>()
  const runFork = Runtime.runFork(runtime)
  const wss = new WebSocketServer({ noServer: true, maxPayload: api.maxBodyBytes })
  yield* Effect.addFinalizer(() => Effect.sync(() => wss.close()))
  const sockets = new Set<WebSocket>()
  // Keep-alive for every socket from one scheduled fiber (not a timer per socket).
  yield* Effect.sleep(api.wsPingIntervalMs).pipe(
    Effect.zipRight(
      Effect.sync(() => {
        for (const ws of sockets) if (ws.readyState === ws.OPEN) ws.ping()
      })
    ),
    Effect.forever,
    Effect.forkScoped
  )

  const serveSocket = (ws: WebSocket, client: string) => {
    const requests = new Map<string, Fiber.RuntimeFiber<unknown, InferenceError>>()
    let assigned = 0
    const send = (message: WsServerMessage) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message))
    }
    const sendError = (id: string | null, code: string, message: string) => send({ type: "error", id, data: { code, message } })

    /** The next server id (`ws-N`) that no request of this socket uses. */
    const assignId = (): string => {
      let id: string
      do id = `ws-${++assigned}`
      while (requests.has(id))
      return id
    }

    const start = (id: string, data: WsInferenceData, receivedAt: number) => {
      const sink: RelaySink = {
        push: (event) => {
          if (event.type === "tokens") {
            event.tokens.forEach((token, i) => send({ type: "token", id, data: { token, index: event.index + i } }))
          } else if (event.type === "done") {
            send({
              type: "done",
              id,
              data: {
                totalTokens: event.usage.completionTokens,
                latencyMs: Math.max(0, Date.now() - receivedAt),
                finishReason: event.finishReason,
                promptTokens: event.usage.promptTokens,
                completionTokens: event.usage.completionTokens,
                ...(event.migrations !== undefined && event.migrations > 0 ? { migrations: event.migrations } : {})
              }
            })
          }
          return ws.bufferedAmount <= api.maxBufferedBytes
        }
      }
      const route = toRouteRequest(data, api)
      if (Either.isLeft(route)) return sendError(id, "invalid_request", route.left.message)
      const fiber = runFork(router.execute({ ...route.right, client }, sink))
      requests.set(id, fiber)
      fiber.addObserver((exit) => {
        if (requests.get(id) === fiber) requests.delete(id)
        if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure)) {
          const { code, message } = errorCode(failure.value)
          return sendError(id, code, message)
        }
        Runtime.runSync(runtime)(Effect.logError("WebSocket request failed", exit.cause))
        sendError(id, "internal_error", "The request failed unexpectedly")
      })
    }

    const cancel = (id: string) => {
      const fiber = requests.get(id)
      if (fiber === undefined) return
      requests.delete(id)
      fiber.unsafeInterruptAsFork(FiberId.none)
      sendError(id, cancelled.code, cancelled.message)
    }

    const handle = (text: string) => {
      const receivedAt = Date.now()
      const decoded = decodeFrame(text)
      if (Either.isLeft(decoded)) return sendError(decoded.left.id, "invalid_request", decoded.left.message)
      const message = decoded.right
      if (message.type === "cancel") return cancel(message.id)
      const id = message.id ?? assignId()
      if (requests.has(id)) return sendError(id, "invalid_request", `a request with id "${id}" is already in flight on this socket`)
      if (requests.size >= api.wsMaxRequestsPerSocket) {
        return sendError(id, "too_many_requests", `this socket already runs ${requests.size} requests (controller.api.ws_max_requests_per_socket)`)
      }
      start(id, message.data, receivedAt)
    }

    ws.on("message", (data, isBinary) => {
      try {
        handle(isBinary ? Buffer.from(data as Buffer).toString("utf8") : data.toString())
      } catch (cause) {
        Runtime.runSync(runtime)(Effect.logError("a WebSocket frame could not be handled", cause))
      }
    })
    sockets.add(ws)
    ws.on("close", () => {
      sockets.delete(ws)
      for (const fiber of requests.values()) fiber.unsafeInterruptAsFork(FiberId.none)
      requests.clear()
    })
    ws.on("error", () => ws.terminate())
  }

  /** Takes over an upgrade request for `/ws` (already authenticated by the front door). */
  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer, client: string): void => {
    wss.handleUpgrade(req, socket, head, (ws) => serveSocket(ws, client))
  }

  /** The answer to a plain GET of `/ws`: it only speaks WebSocket. */
  const notUpgraded = {
    status: 426,
    body: { error: { message: "GET /ws expects a WebSocket upgrade", type: "invalid_request_error", code: "upgrade_required" } }
  } as const
  return { upgrade, notUpgraded } as const
})

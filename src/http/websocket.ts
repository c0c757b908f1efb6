import { HttpLayerRouter, HttpServerRequest, HttpServerResponse, Socket } from "@effect/platform"
import { Cause, Clock, Effect, Either, Exit, Fiber, FiberMap, Option, ParseResult, Queue, Schema, Stream } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { Router, type RouteRequest } from "../controller/router.js"
import { BodyTooLarge, Cancelled, toOpenAiError, type WireError } from "../domain/errors.js"
import { type WsClientMessage, WsClientMessage as WsClientMessageSchema, type WsInferenceData, type WsServerMessage } from "../domain/websocket.js"
import { simpleToRoute } from "./route-request.js"

/**
 * `GET /ws` (CONTRACT §6): streaming inference over one WebSocket.
 *
 * - Frames are handled one at a time in arrival order by one fiber (so a `cancel` never overtakes
 *   the `inference` it names); each request then runs in its own fiber of a `FiberMap` keyed by
 *   its id, so several requests stream at once.
 * - A frame that is not valid JSON or fails `WsClientMessage` gets an `error` reply with code
 *   `invalid_request` (and the id when one could be read); the socket stays open. So does an
 *   `inference` whose id is already in flight, and a frame larger than
 *   `controller.api.max_body_bytes` (code `body_too_large`, id `null`: it is not parsed). A
 *   `cancel` for an id not in flight is ignored (it may have just finished).
 * - `cancel` interrupts the request's Router stream (the Router tells the worker
 *   `worker.{id}.cancel`) and replies `error` with code `cancelled`. Closing the socket closes the
 *   connection's scope: every request still running is interrupted the same way.
 * - Keep-alive: every `controller.api.ws_ping_interval_ms` the server sends a WebSocket protocol
 *   ping. @effect/platform's `Socket` has no ping method (its writer only sends data frames and
 *   close); the underlying `ws` socket is only reachable as the `Socket.WebSocket` service in the
 *   context of the effects that handle incoming frames. So it is captured from the first client
 *   frame on; until then (a socket that has sent nothing yet) the keep-alive is a JSON
 *   `{"type":"ping"}` text frame, which clients ignore.
 * - API keys are checked before the upgrade by the server's global middleware (`protections.ts`).
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

const decodeMessage = Schema.decodeUnknownEither(WsClientMessageSchema, { errors: "all" })

/**
 * The first schema issue as one line, `invalid data.maxTokens: Expected …`. Several issues at the
 * same path (each member of a literal union) are merged: `Expected "system" | "user", actual "bot"`.
 */
const describeIssues = (error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const first = issues[0]
  if (first === undefined) return "invalid message"
  const where = first.path.length === 0 ? "message" : first.path.join(".")
  const samePath = issues.filter((i) => i.path.join(".") === first.path.join("."))
  const parts = samePath.map((i) => /^Expected (.*), actual (.*)$/s.exec(i.message))
  if (samePath.length > 1 && parts.every((m) => m !== null)) {
    // An optional field also reports "Expected undefined": leave that out.
    const expected = parts.map((m) => m?.[1] ?? "").filter((e) => e !== "undefined").join(" | ")
    return `invalid ${where}: Expected ${expected}, actual ${parts[0]?.[2] ?? "?"}`
  }
  return `invalid ${where}: ${first.message}`
}

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
  const id = "id" in json && typeof json.id === "string" && json.id.length > 0 ? json.id : null
  return Either.mapLeft(decodeMessage(json), (error) => ({ id, message: describeIssues(error) }))
}

/** The Router request of one `inference` message, with `maxTokens` defaulted and capped. */
export const toRouteRequest = (data: WsInferenceData, api: ClusterConfig["controller"]["api"]): RouteRequest =>
  simpleToRoute(data, api, "ws")

interface Pingable {
  readonly ping: () => void
}
const isPingable = (u: unknown): u is Pingable =>
  typeof u === "object" && u !== null && "ping" in u && typeof u.ping === "function"

const textDecoder = new TextDecoder()

/** Serves one upgraded socket until it closes; every request still running is then interrupted. */
const serveSocket = (socket: Socket.Socket, router: Router, config: ClusterConfig) =>
  Effect.gen(function* () {
    const api = config.controller.api
    const write = yield* socket.writer
    // A write fails only when the socket is gone; the connection's scope ends everything then.
    const send = (message: WsServerMessage) => write(JSON.stringify(message)).pipe(Effect.ignore)
    const sendError = (id: string | null, code: string, message: string) =>
      send({ type: "error", id, data: { code, message } })

    const requests = yield* FiberMap.make<string>()
    const inbox = yield* Queue.unbounded<string | Uint8Array>()
    let assigned = 0
    let raw: Pingable | undefined

    /** The next server id (`ws-N`) that no request of this socket uses. */
    const assignId = (): string => {
      let id: string
      do id = `ws-${++assigned}`
      while (FiberMap.unsafeHas(requests, id))
      return id
    }

    const runRequest = (id: string, data: WsInferenceData, receivedAt: number) =>
      router.route(toRouteRequest(data, api)).pipe(
        Stream.runForEach((event) =>
          event.type === "token"
            ? send({ type: "token", id, data: { token: event.token, index: event.index } })
            : Effect.flatMap(Clock.currentTimeMillis, (now) =>
                send({
                  type: "done",
                  id,
                  data: {
                    totalTokens: event.usage.completionTokens,
                    latencyMs: Math.max(0, now - receivedAt),
                    finishReason: event.finishReason,
                    promptTokens: event.usage.promptTokens,
                    completionTokens: event.usage.completionTokens
                  }
                })
              )
        ),
        Effect.catchAll((error) => {
          const { code, message } = errorCode(error)
          return sendError(id, code, message)
        }),
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.failCause(cause)
            : Effect.logError("WebSocket request failed", cause).pipe(
                Effect.zipRight(sendError(id, "internal_error", "The request failed unexpectedly"))
              )
        ),
        Effect.annotateLogs({ wsRequestId: id })
      )

    const cancelled = errorCode(new Cancelled())
    const cancel = (id: string) =>
      Option.match(FiberMap.unsafeGet(requests, id), {
        onNone: () => Effect.logDebug(`cancel for ${id}: no such request in flight`),
        onSome: (fiber) =>
          Effect.gen(function* () {
            const exit = yield* Fiber.interrupt(fiber)
            yield* FiberMap.remove(requests, id)
            // It may have finished (and sent its `done`) just before the cancel arrived.
            if (Exit.isInterrupted(exit)) yield* sendError(id, cancelled.code, cancelled.message)
          })
      })

    const handle = (frame: string | Uint8Array) =>
      Effect.gen(function* () {
        const receivedAt = yield* Clock.currentTimeMillis
        const size = typeof frame === "string" ? Buffer.byteLength(frame) : frame.byteLength
        if (size > api.maxBodyBytes) {
          const { code, message } = errorCode(new BodyTooLarge({ limitBytes: api.maxBodyBytes }))
          return yield* sendError(null, code, message)
        }
        const decoded = decodeFrame(typeof frame === "string" ? frame : textDecoder.decode(frame))
        if (Either.isLeft(decoded)) return yield* sendError(decoded.left.id, "invalid_request", decoded.left.message)
        const message = decoded.right
        if (message.type === "cancel") return yield* cancel(message.id)
        const id = message.id ?? assignId()
        if (FiberMap.unsafeHas(requests, id)) {
          return yield* sendError(id, "invalid_request", `a request with id "${id}" is already in flight on this socket`)
        }
        yield* FiberMap.run(requests, id, runRequest(id, message.data, receivedAt))
      })

    yield* Queue.take(inbox).pipe(Effect.flatMap(handle), Effect.forever, Effect.forkScoped)

    const ping = Effect.suspend(() =>
      raw === undefined ? send({ type: "ping" }) : Effect.try(() => raw?.ping()).pipe(Effect.ignore)
    )
    yield* Effect.sleep(api.wsPingIntervalMs).pipe(Effect.zipRight(ping), Effect.forever, Effect.forkScoped)

    /** Runs in the context of frame handlers, where the socket layer provides the raw WebSocket. */
    const captureRaw = Effect.serviceOption(Socket.WebSocket).pipe(
      Effect.map(
        Option.map((ws) => {
          if (isPingable(ws)) raw = ws
        })
      )
    )

    yield* socket
      .runRaw((frame) => {
        // Synchronous, so that frames keep their order.
        Queue.unsafeOffer(inbox, frame)
        return raw === undefined ? captureRaw : undefined
      })
      .pipe(Effect.catchAll((error) => Effect.logDebug(`WebSocket closed: ${error.message}`)))
  })

/**
 * The `GET /ws` route. Needs the `Router` and the config when the layer is built; a request that is
 * not a WebSocket upgrade gets 426.
 */
export const WebSocketRouteLive = HttpLayerRouter.use((httpRouter) =>
  Effect.gen(function* () {
    const router = yield* Router
    const config = yield* ClusterConfigService
    const handler = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const upgraded = yield* Effect.either(request.upgrade)
      if (Either.isLeft(upgraded)) {
        return HttpServerResponse.unsafeJson(
          { error: { message: "GET /ws expects a WebSocket upgrade", type: "invalid_request_error", code: "upgrade_required" } },
          { status: 426, headers: { upgrade: "websocket" } }
        )
      }
      yield* Effect.scoped(serveSocket(upgraded.right, router, config))
      return HttpServerResponse.empty()
    })
    yield* httpRouter.add("GET", "/ws", handler)
  })
)

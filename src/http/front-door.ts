import { Effect, Option, Runtime } from "effect"
import { randomUUID } from "node:crypto"
import { type IncomingMessage, Server, type ServerResponse } from "node:http"
import type { Duplex } from "node:stream"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"
import { RequestJournal } from "../controller/request-journal.js"
import { InvalidRequest, RateLimited, toOpenAiError, Unauthorized, type WireError } from "../domain/errors.js"
import { answerHeaders, writeError, writeJson } from "./error-response.js"
import { type InferenceKind, makeInferenceLane } from "./inference-lane.js"
import { bearerToken, keyId, makeKeyCheck, makeWindowCounter, needsKey, queryKey, rateLimited } from "./protections.js"
import { canonicalTarget, type RequestTarget, targetUrl } from "./request-target.js"
import { makeWebSocketServer } from "./websocket.js"

/**
 * The controller's front door: every HTTP request and every upgrade passes here first, in plain
 * code on Node's own event, before anything routes it (issue 9, issue 10).
 *
 * 1. The request gets its id (`x-request-id`, also the id on the bus and in the log).
 * 2. Its target is made canonical once (`request-target.ts`); everything after sees only that.
 * 3. CORS: preflights are answered here; answers carry the CORS headers.
 * 4. API keys (default deny: every route but the open ones of `protections.ts`), a limit on failed
 *    authentications per client address, and the rate limit of `/v1/*`.
 * 5. The inference routes go to the fast lane (`inference-lane.ts`), `/ws` upgrades to the
 *    WebSocket server; everything else continues, with the canonical URL, to the Effect router.
 */

const OPEN_ORIGINS = "*"

/** The CORS headers of an answer to `origin`; undefined when CORS is off or the origin is not allowed. */
export const corsHeaders = (api: ClusterConfig["controller"]["api"], origin: string | undefined): Record<string, string> | undefined => {
  if (!api.corsEnabled || origin === undefined) return undefined
  const wildcard = api.corsOrigins.includes(OPEN_ORIGINS)
  if (!wildcard && !api.corsOrigins.includes(origin)) return undefined
  return {
    // With explicit origins a browser may send credentials (cookies, `credentials: "include"`).
    ...(wildcard ? { "access-control-allow-origin": "*" } : { "access-control-allow-origin": origin, "access-control-allow-credentials": "true", vary: "origin" }),
    "access-control-expose-headers": "x-request-id, retry-after"
  }
}

/** The answer to a CORS preflight: the methods we serve and whatever headers the client asks for. */
export const preflightHeaders = (
  api: ClusterConfig["controller"]["api"],
  origin: string | undefined,
  requestedHeaders: string | undefined
): Record<string, string> => {
  const allowed = corsHeaders(api, origin)
  if (allowed === undefined) return {}
  return {
    ...allowed,
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": requestedHeaders ?? "authorization, content-type",
    "access-control-max-age": "600"
  }
}

const inferenceKind = (method: string | undefined, key: string): InferenceKind | undefined =>
  method !== "POST" ? undefined : key === "/v1/chat/completions" ? "chat" : key === "/v1/completions" ? "completions" : undefined

/** The route label of a refused request (bounded: never the raw path). */
const routeLabel = (key: string): string =>
  key === "/v1/chat/completions" ? "chat" : key === "/v1/completions" ? "completions" : key === "/ws" ? "ws" : key === "/rpc" ? "rpc" : "http"

export interface FrontDoor {
  /** Handles `request` itself (true) or rewrites its URL to the canonical one and lets it continue (false). */
  readonly request: (req: IncomingMessage, res: ServerResponse) => boolean
  /** The same for an upgrade request. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
}

export const makeFrontDoor = Effect.gen(function* () {
  const api = (yield* ClusterConfigService).controller.api
  const journal = yield* RequestJournal
  const lane = yield* makeInferenceLane
  const webSocket = yield* makeWebSocketServer
  const runSync = Runtime.runSync(yield* Effect.runtime<never>())
  const keys = api.apiKeys
  const isValidKey = makeKeyCheck(keys)
  const requests = makeWindowCounter(api.rateLimit.requestsPerMinute)
  const authFailures = makeWindowCounter(api.authFailuresPerMinute)

  const record = (requestId: string, method: string, key: string, client: string, receivedAt: number, error: WireError) => {
    const { status, body } = toOpenAiError(error)
    runSync(
      journal.record({
        requestId,
        method,
        route: routeLabel(key),
        model: "",
        modelKnown: false,
        outcome: "failed",
        status,
        errorCode: body.error.code ?? undefined,
        errorMessage: body.error.message,
        tokens: 0,
        durationMs: Date.now() - receivedAt,
        retries: 0,
        startedAt: receivedAt,
        client
      })
    )
  }

  /** Why a request may not go on, or nothing. */
  const refusal = (target: RequestTarget, authorization: string | undefined, client: string, now: number): Option.Option<WireError> => {
    let token = Option.none<string>()
    if (keys.length > 0 && needsKey(target.key)) {
      const blockedFor = authFailures.blocked(client, now)
      if (blockedFor !== undefined) return Option.some(new RateLimited({ retryAfterSeconds: blockedFor }))
      token = Option.orElse(bearerToken(authorization), () => queryKey(target.key, target.query))
      if (Option.isNone(token) || !isValidKey(token.value)) {
        authFailures.take(client, now)
        return Option.some(
          new Unauthorized({
            message: Option.isNone(token) ? "Missing API key: send it as 'Authorization: Bearer KEY'" : "Invalid API key"
          })
        )
      }
    }
    if (api.rateLimit.enabled && rateLimited(target.key)) {
      const counted = requests.take(Option.isSome(token) ? keyId(token.value) : `addr:${client}`, now)
      if (!counted.allowed) return Option.some(new RateLimited({ retryAfterSeconds: counted.retryAfterSeconds }))
    }
    return Option.none()
  }

  const request = (req: IncomingMessage, res: ServerResponse): boolean => {
    const receivedAt = Date.now()
    const requestId = `req-${randomUUID()}`
    const client = req.socket.remoteAddress ?? "unknown"
    const origin = req.headers.origin
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      res.writeHead(204, { "x-request-id": requestId, ...preflightHeaders(api, origin, req.headers["access-control-request-headers"]) })
      res.end()
      return true
    }
    // With the request id, to each writeHead (`answerHeaders`).
    const cors = corsHeaders(api, origin)
    const target = canonicalTarget(req.url ?? "/")
    if (target === undefined) {
      const error = new InvalidRequest({ message: `The request target ${JSON.stringify((req.url ?? "").slice(0, 200))} is not a path` })
      writeError(res, error, answerHeaders(requestId, cors))
      record(requestId, req.method ?? "GET", "", client, receivedAt, error)
      return true
    }
    const refused = refusal(target, req.headers.authorization, client, receivedAt)
    if (Option.isSome(refused)) {
      writeError(res, refused.value, answerHeaders(requestId, cors))
      record(requestId, req.method ?? "GET", target.key, client, receivedAt, refused.value)
      return true
    }
    const kind = inferenceKind(req.method, target.key)
    if (kind !== undefined) {
      lane(kind, req, res, { requestId, client, receivedAt, cors })
      return true
    }
    if (target.key === "/ws") {
      writeJson(res, webSocket.notUpgraded.status, webSocket.notUpgraded.body, { upgrade: "websocket", ...answerHeaders(requestId, cors) })
      return true
    }
    // The Effect router writes its own head: node merges these into it.
    const headers = answerHeaders(requestId, cors)
    for (const name in headers) res.setHeader(name, headers[name] ?? "")
    req.url = targetUrl(target)
    return false
  }

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    const receivedAt = Date.now()
    const client = req.socket.remoteAddress ?? "unknown"
    const target = canonicalTarget(req.url ?? "/")
    const refused =
      target === undefined
        ? Option.some<WireError>(new InvalidRequest({ message: "The request target is not a path" }))
        : refusal(target, req.headers.authorization, client, receivedAt)
    if (Option.isSome(refused)) {
      const { status, body } = toOpenAiError(refused.value)
      const text = JSON.stringify(body)
      socket.end(
        `HTTP/1.1 ${status} ${status === 401 ? "Unauthorized" : status === 429 ? "Too Many Requests" : "Bad Request"}\r\n` +
          `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`
      )
      record(`req-${randomUUID()}`, target?.key === "/ws" ? "WS" : (req.method ?? "GET"), target?.key ?? "", client, receivedAt, refused.value)
      return true
    }
    if (target?.key === "/ws") {
      webSocket.upgrade(req, socket, head, client)
      return true
    }
    if (target !== undefined) req.url = targetUrl(target)
    return false
  }

  const door: FrontDoor = { request, upgrade }
  return door
})

/**
 * Node's HTTP server with the front door in front of every `request` and `upgrade` event: the
 * Effect router (installed as an ordinary listener by @effect/platform-node) only hears the
 * requests the door lets through, already normalised.
 */
export class FrontDoorServer extends Server {
  constructor(private readonly door: FrontDoor) {
    super()
    // Keep-alive connections outlive the 5 s Node default: OpenAI clients and proxies reuse them, and
    // a server that closes a connection just as a client sends on it resets that request.
    this.keepAliveTimeout = 65_000
    this.headersTimeout = 66_000
  }

  /**
   * The controller closes its server only after draining, so nothing it still wants to send is in
   * flight: idle keep-alive connections (65 s) close now, and whatever is left gets a second to
   * flush before it is cut, instead of holding the shutdown for a minute.
   */
  override close(callback?: (error?: Error) => void): this {
    super.close(callback)
    this.closeIdleConnections()
    setTimeout(() => this.closeAllConnections(), 1_000).unref()
    return this
  }

  override emit(event: string, ...args: Array<unknown>): boolean {
    if (event === "request" && this.door.request(args[0] as IncomingMessage, args[1] as ServerResponse)) return true
    if (event === "upgrade" && this.door.upgrade(args[0] as IncomingMessage, args[1] as Duplex, args[2] as Buffer)) return true
    return super.emit(event, ...args)
  }
}

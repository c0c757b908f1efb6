import { HttpLayerRouter, HttpServerRequest } from "@effect/platform"
import { Clock, Effect, Layer, Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { ClusterConfigService } from "../config/cluster-config.js"
import { RateLimited, Unauthorized } from "../domain/errors.js"
import { errorResponse } from "./error-response.js"

const digest = (value: string) => createHash("sha256").update(value).digest()

/**
 * Checks a bearer key against the configured keys in constant time: both sides are hashed to the
 * same length first and every key is compared, so neither length nor position leaks.
 */
export const makeKeyCheck = (keys: ReadonlyArray<Redacted.Redacted<string>>) => {
  const expected = keys.map((k) => digest(Redacted.value(k)))
  return (presented: string): boolean => {
    const candidate = digest(presented)
    let found = false
    for (const key of expected) found = timingSafeEqual(key, candidate) || found
    return found
  }
}

/** The bearer token of an `Authorization` header, if it has one. */
export const bearerToken = (header: string | undefined): Option.Option<string> => {
  const match = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim())
  return match?.[1] === undefined ? Option.none() : Option.some(match[1])
}

/**
 * Browsers cannot set headers on a WebSocket, so `/ws` also takes the key as `?api_key=KEY`. Only
 * there: a key in a URL ends up in proxy logs and browser history.
 */
export const queryKey = (path: string, url: string): Option.Option<string> => {
  if (path !== "/ws") return Option.none()
  const query = url.indexOf("?")
  const key = query < 0 ? null : new URLSearchParams(url.slice(query + 1)).get("api_key")
  return key === null || key === "" ? Option.none() : Option.some(key)
}

/** Routes that need a key when keys are configured; `/health`, `/ready`, `/metrics` and the docs stay open. */
export const needsKey = (path: string) =>
  path.startsWith("/v1/") || path.startsWith("/api/") || path === "/ws" || path.startsWith("/rpc")

/** Routes that count against the rate limit (CONTRACT §5: `/v1/*`). */
export const rateLimited = (path: string) => path.startsWith("/v1/")

/**
 * Fixed one-minute windows per client (API key, or address when there are no keys). Pure state
 * transition, so tests drive it with explicit times.
 */
export interface Window {
  readonly start: number
  readonly count: number
}

export const admitRequest = (
  window: Window | undefined,
  now: number,
  limit: number,
  windowMs = 60_000
): { readonly allowed: boolean; readonly window: Window; readonly retryAfterSeconds: number } => {
  const current = window === undefined || now - window.start >= windowMs ? { start: now, count: 0 } : window
  const retryAfterSeconds = Math.max(1, Math.ceil((current.start + windowMs - now) / 1000))
  if (current.count >= limit) return { allowed: false, window: current, retryAfterSeconds }
  return { allowed: true, window: { start: current.start, count: current.count + 1 }, retryAfterSeconds }
}

export class RateLimiter extends Effect.Service<RateLimiter>()("http/RateLimiter", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const { enabled, requestsPerMinute } = config.controller.api.rateLimit
    const windows = new Map<string, Window>()
    const check = (client: string): Effect.Effect<void, RateLimited> =>
      enabled
        ? Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const result = admitRequest(windows.get(client), now, requestsPerMinute)
            windows.set(client, result.window)
            // Forget idle clients so the map stays as small as the set of recent clients.
            if (windows.size > 10_000) {
              for (const [key, w] of windows) if (now - w.start >= 60_000) windows.delete(key)
            }
            return result.allowed ? Effect.void : Effect.fail(new RateLimited({ retryAfterSeconds: result.retryAfterSeconds }))
          })
        : Effect.void
    return { check } as const
  })
}) {}

/**
 * API keys and the rate limit, for every route of the server (a global HttpLayerRouter middleware:
 * HttpApi middleware does not run under `HttpLayerRouter.addHttpApi`). Keys are never logged.
 */
export const ProtectionsLive = HttpLayerRouter.middleware(
  Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const limiter = yield* RateLimiter
    const keys = config.controller.api.apiKeys
    const isValidKey = makeKeyCheck(keys)
    return (httpEffect) =>
      Effect.gen(function* () {
        const request = yield* HttpServerRequest.HttpServerRequest
        const path = request.url.split("?")[0] ?? request.url
        if (request.method === "OPTIONS") return yield* httpEffect
        const token = Option.orElse(bearerToken(request.headers["authorization"]), () => queryKey(path, request.url))
        if (keys.length > 0 && needsKey(path)) {
          if (Option.isNone(token)) {
            return errorResponse(new Unauthorized({ message: "Missing API key: send it as 'Authorization: Bearer KEY'" }))
          }
          if (!isValidKey(token.value)) return errorResponse(new Unauthorized({ message: "Invalid API key" }))
        }
        if (rateLimited(path)) {
          const client =
            keys.length > 0 && Option.isSome(token)
              ? `key:${digest(token.value).toString("hex").slice(0, 16)}`
              : `addr:${Option.getOrElse(request.remoteAddress, () => "unknown")}`
          const limited = yield* Effect.either(limiter.check(client))
          if (limited._tag === "Left") return errorResponse(limited.left)
        }
        return yield* httpEffect
      })
  }),
  { global: true }
).pipe(Layer.provide(RateLimiter.Default))

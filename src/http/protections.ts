import { Option, Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"

/**
 * The access rules of the front door (issue 9), as plain functions of the canonical request target
 * (`request-target.ts`). Default deny: with API keys configured, every route needs a key except the
 * few listed as open; a new route is protected without anyone remembering to protect it.
 */

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

/** A short, non-reversible name for a key, to count its requests by. */
export const keyId = (key: string): string => `key:${digest(key).toString("hex").slice(0, 16)}`

/** The bearer token of an `Authorization` header, if it has one. */
export const bearerToken = (header: string | undefined): Option.Option<string> => {
  const match = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim())
  return match?.[1] === undefined ? Option.none() : Option.some(match[1])
}

/**
 * Browsers cannot set headers on a WebSocket, so `/ws` also takes the key as `?api_key=KEY`. Only
 * there: a key in a URL ends up in proxy logs and browser history.
 */
export const queryKey = (key: string, query: string): Option.Option<string> => {
  if (key !== "/ws" || query === "") return Option.none()
  const value = new URLSearchParams(query).get("api_key")
  return value === null || value === "" ? Option.none() : Option.some(value)
}

/** The routes that stay open when API keys are configured: probes, metrics, docs, the dashboard page. */
const OPEN_ROUTES: ReadonlySet<string> = new Set(["/", "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/dashboard"])

/** Whether a request to the canonical target `key` (lower-case, decoded) needs an API key when keys are configured. */
export const needsKey = (key: string): boolean => !OPEN_ROUTES.has(key)

/** Routes that count against the rate limit (docs/contract.md §6.2: `/v1/*`). */
export const rateLimited = (key: string): boolean => key === "/v1" || key.startsWith("/v1/")

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

/** Clients remembered at most; past it, windows older than a minute are forgotten first. */
const MAX_CLIENTS = 10_000

/**
 * Counts per client in fixed windows: `take` counts one and says whether it was within `limit`
 * (else after how many seconds to retry); `blocked` only looks.
 */
export const makeWindowCounter = (limit: number, windowMs = 60_000) => {
  const windows = new Map<string, Window>()
  const forgetIdle = (now: number) => {
    if (windows.size <= MAX_CLIENTS) return
    for (const [client, w] of windows) if (now - w.start >= windowMs) windows.delete(client)
  }
  return {
    take: (client: string, now: number): { readonly allowed: boolean; readonly retryAfterSeconds: number } => {
      const result = admitRequest(windows.get(client), now, limit, windowMs)
      windows.set(client, result.window)
      forgetIdle(now)
      return result
    },
    blocked: (client: string, now: number): number | undefined => {
      const w = windows.get(client)
      if (w === undefined || now - w.start >= windowMs || w.count < limit) return undefined
      return Math.max(1, Math.ceil((w.start + windowMs - now) / 1000))
    }
  }
}

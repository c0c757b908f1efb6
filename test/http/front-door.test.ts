import { describe, expect, inject, layer } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { request as httpRequest } from "node:http"
import WebSocket from "ws"
import { apiConfig, baseUrl, testServerLayer, unique } from "./support/test-server.js"

/**
 * Issue 9: no spelling of a protected path reaches a handler without the API key, and every
 * spelling counts against the same limits. Requests go out exactly as written (node:http, not
 * fetch, whose URL parser would resolve `..` and `//` before sending).
 */

const natsUrl = inject("natsUrl")
const MODEL = unique("door/model")
const KEY = "door-key"

interface Answer {
  readonly status: number
  readonly body: string
  readonly headers: Record<string, string | Array<string> | undefined>
}

/** One HTTP request with the target `path` sent byte for byte. */
const raw = (base: string, method: string, path: string, options: { readonly key?: string; readonly body?: string } = {}) =>
  Effect.async<Answer>((resume) => {
    const { hostname, port } = new URL(base)
    const req = httpRequest(
      {
        host: hostname,
        port,
        method,
        path,
        headers: {
          "content-type": "application/json",
          ...(options.key === undefined ? {} : { authorization: `Bearer ${options.key}` })
        }
      },
      (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => (body += chunk))
        res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body, headers: res.headers })))
      }
    )
    req.on("error", (error) => resume(Effect.die(error)))
    req.end(options.body)
  })

/** The status a WebSocket upgrade to `path` gets (101 when it opens). */
const upgrade = (base: string, path: string, key?: string) =>
  Effect.async<number>((resume) => {
    const socket = new WebSocket(`${base.replace(/^http/, "ws")}${path}`, {
      headers: key === undefined ? {} : { authorization: `Bearer ${key}` }
    })
    socket.once("open", () => {
      socket.terminate()
      resume(Effect.succeed(101))
    })
    socket.once("unexpected-response", (_req, res) => {
      socket.terminate()
      resume(Effect.succeed(res.statusCode ?? 0))
    })
    socket.once("error", () => resume(Effect.succeed(-1)))
  })

const chatBody = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2 })

/** Every protected route and the method and body it takes. */
const ROUTES: ReadonlyArray<{ readonly method: string; readonly path: string; readonly body?: string }> = [
  { method: "POST", path: "/v1/chat/completions", body: chatBody },
  { method: "POST", path: "/v1/completions", body: JSON.stringify({ model: MODEL, prompt: "hi", max_tokens: 2 }) },
  { method: "GET", path: "/v1/models" },
  { method: "GET", path: "/api/cluster/status" },
  { method: "GET", path: "/api/cluster/workers" },
  { method: "POST", path: "/rpc", body: "{}" }
]

/** The spellings an attacker tries: case, `//`, `%xx`, trailing `/`, absolute form, `.` and `..` segments. */
const variantsOf = (path: string): ReadonlyArray<string> => [
  path,
  path.toUpperCase(),
  path.replace(/^\//, "//").replace(/\//g, "//"),
  path.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`),
  `${path}/`,
  `http://evil.example${path}`,
  `/./x/..${path}`,
  `/%2e%2e${path}`
]

layer(
  testServerLayer({
    natsUrl,
    workerId: unique("door-worker"),
    models: [MODEL],
    config: apiConfig({ apiKeys: [Redacted.make(KEY)], authFailuresPerMinute: 10_000 })
  }),
  { excludeTestServices: true }
)("API keys at the front door", (it) => {
  it.effect("every spelling of every protected HTTP route answers 401 without a key, and works with it", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      for (const route of ROUTES) {
        for (const path of variantsOf(route.path)) {
          const answer = yield* raw(base, route.method, path, route.body === undefined ? {} : { body: route.body })
          expect({ route: route.path, path, status: answer.status }).toEqual({ route: route.path, path, status: 401 })
          expect(JSON.parse(answer.body)).toMatchObject({ error: { code: "invalid_api_key" } })
        }
      }
      // With the key, the spellings reach the same handlers (the router sees the canonical path).
      for (const path of variantsOf("/v1/chat/completions")) {
        expect((yield* raw(base, "POST", path, { key: KEY, body: chatBody })).status).toBe(200)
      }
      expect((yield* raw(base, "GET", "//API/cluster/status", { key: KEY })).status).toBe(200)
    })
  )

  it.effect("every spelling of /ws refuses the upgrade without a key", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      for (const path of ["/ws", "/WS", "//ws", "/ws/", "/%77s", "/x/../ws", "/ws?api_key=wrong"]) {
        expect({ path, status: yield* upgrade(base, path) }).toEqual({ path, status: 401 })
      }
      expect(yield* upgrade(base, "//WS/", KEY)).toBe(101)
      expect(yield* upgrade(base, `/ws?api_key=${KEY}`)).toBe(101)
    })
  )

  it.effect("open routes stay open; everything else, even a route that does not exist, needs the key", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      for (const path of ["/health", "/HEALTH/", "/metrics", "/openapi.json"]) {
        expect({ path, status: (yield* raw(base, "GET", path)).status }).toEqual({ path, status: 200 })
      }
      expect((yield* raw(base, "GET", "/no/such/route")).status).toBe(401)
      expect((yield* raw(base, "GET", "/no/such/route", { key: KEY })).status).toBe(404)
    })
  )

  it.effect("every response carries x-request-id; a request target that is not a path is a 400", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      const ok = yield* raw(base, "GET", "/health")
      const refused = yield* raw(base, "GET", "/api/cluster/status")
      // The inference lane writes its own heads: a stream, a whole answer, and its own refusal.
      const streamed = yield* raw(base, "POST", "/v1/chat/completions", { key: KEY, body: JSON.stringify({ ...JSON.parse(chatBody), stream: true }) })
      const whole = yield* raw(base, "POST", "/v1/chat/completions", { key: KEY, body: chatBody })
      const invalid = yield* raw(base, "POST", "/v1/chat/completions", { key: KEY, body: "{" })
      expect([streamed.status, streamed.headers["content-type"], whole.status, invalid.status]).toEqual([200, "text/event-stream", 200, 400])
      const answers = [ok, refused, streamed, whole, invalid]
      for (const answer of answers) expect(answer.headers["x-request-id"]).toMatch(/^req-[0-9a-f-]{36}$/)
      expect(new Set(answers.map((a) => a.headers["x-request-id"])).size).toBe(answers.length)
      expect((yield* raw(base, "GET", "/bad%zz")).status).toBe(400)
    })
  )
})

layer(
  testServerLayer({
    natsUrl,
    workerId: unique("door-limit-worker"),
    models: [MODEL],
    config: apiConfig({ apiKeys: [Redacted.make(KEY)], rateLimit: { enabled: true, requestsPerMinute: 4 } })
  }),
  { excludeTestServices: true }
)("rate limits at the front door", (it) => {
  it.effect("spellings of /v1/* share one rate limit: past it, 429 with Retry-After", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      const statuses: Array<number> = []
      for (const path of ["/v1/models", "/V1/models", "//v1/models", "/%76%31/models", "/v1/models/"]) {
        statuses.push((yield* raw(base, "GET", path, { key: KEY })).status)
      }
      expect(statuses).toEqual([200, 200, 200, 200, 429])
      const limited = yield* raw(base, "GET", "http://x/v1/models", { key: KEY })
      expect(limited.status).toBe(429)
      expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0)
      // The cluster routes are not rate limited.
      expect((yield* raw(base, "GET", "/api/cluster/status", { key: KEY })).status).toBe(200)
    })
  )
})

describe("failed authentications", () => {
  layer(
    testServerLayer({
      natsUrl,
      workerId: unique("door-auth-worker"),
      models: [MODEL],
      config: apiConfig({ apiKeys: [Redacted.make(KEY)], authFailuresPerMinute: 3 })
    }),
    { excludeTestServices: true }
  )("are rate limited per client address", (it) => {
    it.effect("after 3 failures in a minute the address gets 429 even with the right key", () =>
      Effect.gen(function* () {
        const base = yield* baseUrl
        const statuses: Array<number> = []
        for (const key of ["a", "b", undefined]) statuses.push((yield* raw(base, "GET", "/api/cluster/status", key === undefined ? {} : { key })).status)
        expect(statuses).toEqual([401, 401, 401])
        const blocked = yield* raw(base, "GET", "/api/cluster/status", { key: "c" })
        expect(blocked.status).toBe(429)
        expect(Number(blocked.headers["retry-after"])).toBeGreaterThan(0)
        expect((yield* raw(base, "GET", "/api/cluster/status", { key: KEY })).status).toBe(429)
        expect(yield* upgrade(base, "/ws", KEY)).toBe(429)
        // Open routes still answer.
        expect((yield* raw(base, "GET", "/health")).status).toBe(200)
      })
    )
  })
})

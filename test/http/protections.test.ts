import { describe, expect, inject, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Redacted } from "effect"
import OpenAI from "openai"
import { admitRequest, bearerToken, makeKeyCheck, makeWindowCounter, needsKey, queryKey, rateLimited } from "../../src/http/protections.js"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { apiConfig } from "./support/test-server.js"

const natsUrl = inject("natsUrl")

const startCluster = (
  id: string,
  patch: Parameters<typeof controllerLayer>[1],
  worker: Partial<Parameters<typeof workerLayer>[1]> = {}
) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      workerLayer(natsUrl, { id, models: ["guard/model"], ...worker }).pipe(Layer.provideMerge(controllerLayer(natsUrl, patch)))
    )
    const url = yield* Effect.provide(baseUrl, context)
    yield* eventually(Effect.promise(() => fetch(`${url}/ready`).then((r) => r.status === 200)))
    return url
  })

const chat = (url: string, init: { headers?: Record<string, string>; body?: string } = {}) =>
  Effect.promise(() =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...init.headers },
      body: init.body ?? JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_tokens: 2 })
    }).then(async (r) => ({ status: r.status, headers: r.headers, body: (await r.json()) as { error?: { code: string; message: string } } }))
  )

/** Requests the controller is handling and those waiting for a slot (`/api/cluster/dashboard`). */
const load = (url: string) =>
  Effect.promise(() =>
    fetch(`${url}/api/cluster/dashboard`)
      .then((r) => r.json())
      .then((body: { controller: { inFlight: number; queued: number } }) => body.controller)
  )

describe("API protections", () => {
  it("pure pieces: bearer parsing, constant-time key check, default-deny routes, fixed windows", () => {
    expect(bearerToken("Bearer abc")).toEqual(expect.objectContaining({ value: "abc" }))
    expect(bearerToken("Basic abc")._tag).toBe("None")
    expect(bearerToken(undefined)._tag).toBe("None")
    expect(queryKey("/ws", "api_key=k1")).toEqual(expect.objectContaining({ value: "k1" }))
    expect(queryKey("/v1/models", "api_key=k1")._tag).toBe("None")
    expect(queryKey("/ws", "api_key=")._tag).toBe("None")
    const check = makeKeyCheck([Redacted.make("k1"), Redacted.make("k2")])
    expect([check("k1"), check("k2"), check("k3"), check("")]).toEqual([true, true, false, false])
    expect(["/v1/models", "/api/cluster/status", "/ws", "/rpc", "/anything-new"].map(needsKey)).toEqual([true, true, true, true, true])
    expect(["/health", "/ready", "/metrics", "/docs", "/openapi.json", "/dashboard", "/"].map(needsKey)).toEqual(
      Array.from({ length: 7 }, () => false)
    )
    expect(["/v1/chat/completions", "/v1", "/api/cluster/status", "/v10/x"].map(rateLimited)).toEqual([true, true, false, false])
    const first = admitRequest(undefined, 0, 2)
    const second = admitRequest(first.window, 10, 2)
    const third = admitRequest(second.window, 20_000, 2)
    expect([first.allowed, second.allowed, third.allowed]).toEqual([true, true, false])
    expect(third.retryAfterSeconds).toBe(40)
    expect(admitRequest(third.window, 60_000, 2).allowed).toBe(true)
    const counter = makeWindowCounter(2)
    expect(counter.blocked("a", 0)).toBeUndefined()
    counter.take("a", 0)
    counter.take("a", 1)
    expect(counter.blocked("a", 2)).toBe(60)
    expect(counter.blocked("b", 2)).toBeUndefined()
    expect(counter.blocked("a", 60_000)).toBeUndefined()
  })

  it.scopedLive("API keys: 401 without or with a wrong key, 200 with a right one, /health stays open", () =>
    Effect.gen(function* () {
      const url = yield* startCluster("guard-keys", apiConfig({ apiKeys: [Redacted.make("sk-right")] }))
      const none = yield* chat(url)
      expect(none.status).toBe(401)
      expect(none.body.error?.code).toBe("invalid_api_key")
      expect((yield* chat(url, { headers: { authorization: "Bearer sk-wrong" } })).status).toBe(401)
      expect((yield* chat(url, { headers: { authorization: "Bearer sk-right" } })).status).toBe(200)
      const status = yield* Effect.promise(() => fetch(`${url}/api/cluster/status`).then((r) => r.status))
      expect(status).toBe(401)
      expect(yield* Effect.promise(() => fetch(`${url}/health`).then((r) => r.status))).toBe(200)
      const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-right", maxRetries: 0 })
      const models = yield* Effect.promise(() => openai.models.list())
      expect(models.data.map((m) => m.id)).toEqual(["guard/model"])
    })
  )

  it.scopedLive("rate limit: the request past requests_per_minute gets 429 with Retry-After", () =>
    Effect.gen(function* () {
      const url = yield* startCluster("guard-rate", apiConfig({ rateLimit: { enabled: true, requestsPerMinute: 3 } }))
      const statuses = []
      for (let i = 0; i < 4; i++) statuses.push(yield* chat(url))
      expect(statuses.map((r) => r.status)).toEqual([200, 200, 200, 429])
      expect(statuses[3]?.body.error?.code).toBe("rate_limit_exceeded")
      expect(Number(statuses[3]?.headers.get("retry-after"))).toBeGreaterThan(0)
      // Cluster routes are not rate limited.
      expect(yield* Effect.promise(() => fetch(`${url}/api/cluster/status`).then((r) => r.status))).toBe(200)
    })
  )

  it.scopedLive("a body over max_body_bytes is 413; max_tokens above the ceiling is a 400 naming it", () =>
    Effect.gen(function* () {
      const url = yield* startCluster("guard-body", apiConfig({ maxBodyBytes: 2_000, maxTokensCeiling: 4 }))
      const big = yield* chat(url, {
        body: JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "x".repeat(5_000) }] })
      })
      expect(big.status).toBe(413)
      expect(big.body.error?.code).toBe("body_too_large")
      const above = yield* chat(url, {
        body: JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_tokens: 500 })
      })
      expect(above.status).toBe(400)
      expect(above.body.error).toMatchObject({ type: "invalid_request_error", param: "max_tokens" })
      expect(above.body.error?.message).toContain("above this cluster's limit of 4 tokens")
      const spelledNew = yield* chat(url, {
        body: JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_completion_tokens: 5 })
      })
      expect(spelledNew.body.error).toMatchObject({ param: "max_completion_tokens" })
      const within = yield* chat(url, {
        body: JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_tokens: 4 })
      })
      expect(within.status).toBe(200)
      expect((within.body as { usage?: { completion_tokens: number } }).usage?.completion_tokens).toBeLessThanOrEqual(4)
    })
  )

  it.scopedLive("a full queue answers 429 at once with Retry-After", () =>
    Effect.gen(function* () {
      const url = yield* startCluster(
        "guard-queue",
        (c) => ({ ...c, controller: { ...c.controller, queue: { maxPending: 1, maxWaitMs: 10_000 } } }),
        { maxConcurrent: 1, tokensPerSecond: 20 }
      )
      const slow = JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_tokens: 20 })
      const running = yield* Effect.fork(chat(url, { body: slow }))
      yield* eventually(Effect.map(load(url), (l) => l.inFlight === 1 && l.queued === 0))
      const waiting = yield* Effect.fork(chat(url, { body: slow }))
      yield* eventually(Effect.map(load(url), (l) => l.queued === 1))
      const started = Date.now()
      const refused = yield* chat(url, { body: slow })
      expect(Date.now() - started).toBeLessThan(500)
      expect(refused.status).toBe(429)
      expect(refused.body.error?.code).toBe("queue_full")
      expect(refused.headers.get("retry-after")).toBe("10")
      // The waiting request was served once the first finished.
      expect((yield* Fiber.join(running)).status).toBe(200)
      expect((yield* Fiber.join(waiting)).status).toBe(200)
    })
  )

  it.scopedLive("CORS: a preflight from a browser gets the allow headers; a stream and a refusal carry them with x-request-id", () =>
    Effect.gen(function* () {
      const url = yield* startCluster("guard-cors", (c) => c)
      const response = yield* Effect.promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "OPTIONS",
          headers: { origin: "http://localhost:3000", "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" }
        })
      )
      expect(response.status).toBeLessThan(300)
      expect(response.headers.get("access-control-allow-origin")).toBe("*")
      // The answers themselves carry them too, with the request id a browser may read: a stream and a refusal.
      const post = (body: string) =>
        Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { origin: "http://localhost:3000", "content-type": "application/json" }, body })
        )
      const streamed = yield* post(JSON.stringify({ model: "guard/model", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }))
      const invalid = yield* post("{")
      for (const answer of [streamed, invalid]) {
        yield* Effect.promise(() => answer.text())
        expect(answer.headers.get("access-control-allow-origin")).toBe("*")
        expect(answer.headers.get("access-control-expose-headers")).toBe("x-request-id, retry-after")
        expect(answer.headers.get("x-request-id")).toMatch(/^req-/)
      }
      expect([streamed.status, streamed.headers.get("content-type"), invalid.status]).toEqual([200, "text/event-stream", 400])
    })
  )
})

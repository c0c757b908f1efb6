import { describe, expect, inject, it, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import OpenAI from "openai"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { VERSION } from "../../src/version.js"
import { eventually } from "../support/eventually.js"

const natsUrl = inject("natsUrl")
const LLAMA = "mlx-community/Llama-3.2-3B-Instruct-4bit"
const QWEN = "mlx-community/Qwen2.5-7B-Instruct-4bit"
const MISTRAL = "mlx-community/Mistral-7B-Instruct-v0.3-4bit"

/** A controller and three synthetic workers with different model sets, over the run's nats-server. */
const ClusterLive = Layer.mergeAll(
  workerLayer(natsUrl, { id: "e2e-w1", models: [LLAMA, QWEN] }),
  workerLayer(natsUrl, { id: "e2e-w2", models: [LLAMA] }),
  workerLayer(natsUrl, { id: "e2e-w3", models: [LLAMA, MISTRAL] })
).pipe(Layer.provideMerge(controllerLayer(natsUrl)))

const getJsonAt = (url: string, path: string) => Effect.promise(() => fetch(`${url}${path}`).then((r) => r.json() as Promise<unknown>))

const client = Effect.map(baseUrl, (url) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 }))
const getJson = (path: string) =>
  Effect.flatMap(baseUrl, (url) => Effect.promise(() => fetch(`${url}${path}`).then(async (r) => ({ status: r.status, body: (await r.json()) as unknown }))))
const post = (path: string, body: string) =>
  Effect.flatMap(baseUrl, (url) =>
    Effect.promise(() =>
      fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body }).then(async (r) => ({
        status: r.status,
        headers: r.headers,
        body: (await r.json()) as { error: { message: string; type: string; code: string | null; param?: string } }
      }))
    )
  )

layer(ClusterLive, { excludeTestServices: true })("OpenAI-compatible API end to end (real NATS, 3 workers)", (it) => {
  it.effect("all three workers register", () =>
    eventually(
      Effect.map(getJson("/api/cluster/status"), (r) => (r.body as { workers: { online: number } }).workers.online === 3)
    )
  )

  it.effect("non-streaming chat completion with the official client", () =>
    Effect.gen(function* () {
      const openai = yield* client
      const completion = yield* Effect.promise(() =>
        openai.chat.completions.create({
          model: LLAMA,
          messages: [
            { role: "system", content: "You are terse." },
            { role: "user", content: "Say hello" },
            { role: "assistant", content: "Hello." },
            { role: "user", content: "Again" }
          ],
          max_tokens: 12
        })
      )
      expect(completion.id).toMatch(/^chatcmpl-/)
      expect(completion.object).toBe("chat.completion")
      expect(completion.model).toBe(LLAMA)
      expect(completion.created).toBeGreaterThan(1_700_000_000)
      const choice = completion.choices[0]
      expect(choice?.message.role).toBe("assistant")
      expect(choice?.message.content?.length ?? 0).toBeGreaterThan(0)
      expect(["stop", "length"]).toContain(choice?.finish_reason)
      expect(completion.usage?.completion_tokens).toBeGreaterThan(0)
      expect(completion.usage?.prompt_tokens).toBe(7)
      expect(completion.usage?.total_tokens).toBe((completion.usage?.prompt_tokens ?? 0) + (completion.usage?.completion_tokens ?? 0))
    })
  )

  it.effect("streaming chat completion: role first, tokens, usage chunk, same text as non-streaming", () =>
    Effect.gen(function* () {
      const openai = yield* client
      const request = { model: LLAMA, messages: [{ role: "user" as const, content: "Tell me a story" }], max_tokens: 16 }
      const stream = yield* Effect.promise(() =>
        openai.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } })
      )
      const chunks = yield* Effect.promise(async () => {
        const all = []
        for await (const chunk of stream) all.push(chunk)
        return all
      })
      expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant")
      expect(chunks.every((c) => c.object === "chat.completion.chunk" && c.model === LLAMA)).toBe(true)
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1)
      const text = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
      const finish = chunks.find((c) => c.choices[0]?.finish_reason !== null && c.choices[0]?.finish_reason !== undefined)
      expect(["stop", "length"]).toContain(finish?.choices[0]?.finish_reason)
      const usage = chunks[chunks.length - 1]?.usage
      expect(chunks[chunks.length - 1]?.choices).toEqual([])
      expect(usage?.completion_tokens).toBeGreaterThan(0)
      const whole = yield* Effect.promise(() => openai.chat.completions.create(request))
      expect(text).toBe(whole.choices[0]?.message.content)
      expect(usage?.completion_tokens).toBe(whole.usage?.completion_tokens)
    })
  )

  it.effect("models.list() names every model an online worker serves", () =>
    Effect.gen(function* () {
      const openai = yield* client
      const page = yield* Effect.promise(() => openai.models.list())
      expect(page.data.map((m) => m.id)).toEqual([LLAMA, MISTRAL, QWEN].sort())
      expect(page.data.every((m) => m.object === "model")).toBe(true)
    })
  )

  it.effect("legacy completions, streaming and not", () =>
    Effect.gen(function* () {
      const openai = yield* client
      const whole = yield* Effect.promise(() => openai.completions.create({ model: QWEN, prompt: "Once upon a time", max_tokens: 8 }))
      expect(whole.object).toBe("text_completion")
      expect(whole.choices[0]?.text.length ?? 0).toBeGreaterThan(0)
      expect(whole.usage?.prompt_tokens).toBe(4)
      const stream = yield* Effect.promise(() =>
        openai.completions.create({ model: QWEN, prompt: "Once upon a time", max_tokens: 8, stream: true })
      )
      const text = yield* Effect.promise(async () => {
        let all = ""
        for await (const chunk of stream) all += chunk.choices[0]?.text ?? ""
        return all
      })
      expect(text).toBe(whole.choices[0]?.text)
    })
  )

  it.effect("six requests spread across every skilled worker", () =>
    Effect.gen(function* () {
      const openai = yield* client
      const before = yield* getJson("/api/cluster/workers")
      const totals = (body: unknown) =>
        new Map((body as ReadonlyArray<{ workerId: string; metrics?: { requests: { total: number } } }>).map((w) => [w.workerId, w.metrics?.requests.total ?? 0]))
      const start = totals(before.body)
      const results = yield* Effect.forEach(
        Array.from({ length: 6 }, (_, i) => i),
        (i) =>
          Effect.promise(() =>
            openai.chat.completions.create({ model: LLAMA, messages: [{ role: "user", content: `Request ${i}` }], max_tokens: 5 })
          ),
        { concurrency: 6 }
      )
      expect(results).toHaveLength(6)
      // Heartbeats (every 500 ms here) carry each worker's own request counters.
      yield* eventually(
        Effect.map(getJson("/api/cluster/workers"), (r) => {
          const now = totals(r.body)
          return ["e2e-w1", "e2e-w2", "e2e-w3"].every((id) => (now.get(id) ?? 0) > (start.get(id) ?? 0))
        })
      )
    })
  )

  it.effect("a model no worker has registered: 404 model_not_found, and the openai SDK does not retry it", () =>
    Effect.gen(function* () {
      const r = yield* post(
        "/v1/chat/completions",
        JSON.stringify({ model: "mlx-community/NonExistentModel-70B", messages: [{ role: "user", content: "Test" }], max_tokens: 5 })
      )
      expect(r.status).toBe(404)
      expect(r.body.error).toMatchObject({ type: "invalid_request_error", code: "model_not_found" })
      expect(r.body.error.message).toContain("mlx-community/NonExistentModel-70B")
      const total = Effect.map(getJson("/api/cluster/status"), (s) => (s.body as { requests: { total: number } }).requests.total)
      const before = yield* total
      // The SDK's default: it retries 5xx and 429 twice, never a 404.
      const openai = new OpenAI({ baseURL: `${yield* baseUrl}/v1`, apiKey: "unused", maxRetries: 2 })
      const error = yield* Effect.flip(
        Effect.tryPromise(() => openai.chat.completions.create({ model: "nope/nope", messages: [{ role: "user", content: "x" }] }))
      )
      expect(String(error.cause)).toContain("404")
      expect((yield* total) - before).toBe(1)
    })
  )

  it.effect("bad JSON and schema failures are OpenAI-shaped 400s naming the field", () =>
    Effect.gen(function* () {
      const malformed = yield* post("/v1/chat/completions", "{ not json")
      expect(malformed.status).toBe(400)
      expect(malformed.body.error.type).toBe("invalid_request_error")
      expect(malformed.body.error.message).toContain("JSON")
      const missing = yield* post("/v1/chat/completions", JSON.stringify({ model: LLAMA }))
      expect(missing.status).toBe(400)
      expect(missing.body.error.param).toBe("messages")
      expect(missing.body.error.message).toContain("'messages'")
      const badRole = yield* post(
        "/v1/chat/completions",
        JSON.stringify({ model: LLAMA, messages: [{ role: "wizard", content: "hi" }] })
      )
      expect(badRole.status).toBe(400)
      expect(badRole.body.error.param).toBe("messages[0].role")
      const badTemp = yield* post("/v1/completions", JSON.stringify({ model: LLAMA, prompt: "x", temperature: 9 }))
      expect(badTemp.status).toBe(400)
      expect(badTemp.body.error.param).toBe("temperature")
    })
  )

  it.effect("cluster routes: status, workers, one worker, 404 for an unknown id, health and ready", () =>
    Effect.gen(function* () {
      const status = yield* getJson("/api/cluster/status")
      expect(status.status).toBe(200)
      expect(status.body).toMatchObject({ controller: { mode: "controller", state: "ready" }, workers: { total: 3, online: 3 } })
      const workers = yield* getJson("/api/cluster/workers")
      expect((workers.body as ReadonlyArray<{ workerId: string }>).map((w) => w.workerId)).toEqual(["e2e-w1", "e2e-w2", "e2e-w3"])
      const one = yield* getJson("/api/cluster/workers/e2e-w2")
      expect(one.body).toMatchObject({ workerId: "e2e-w2", status: "online", skills: { availableModels: [LLAMA] } })
      const unknown = yield* getJson("/api/cluster/workers/nobody")
      expect(unknown.status).toBe(404)
      expect(unknown.body).toMatchObject({ error: { code: "worker_not_found", type: "not_found_error" } })
      expect((yield* getJson("/health")).status).toBe(200)
      expect((yield* getJson("/ready")).body).toMatchObject({ ready: true, onlineWorkers: 3 })
    })
  )

  it.effect("the OpenAPI document lists every route and /docs renders it", () =>
    Effect.gen(function* () {
      const doc = (yield* getJson("/openapi.json")).body as { openapi: string; paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>> }
      expect(doc.openapi).toMatch(/^3\./)
      expect(Object.keys(doc.paths).sort()).toEqual(
        [
          "/api/cluster/dashboard",
          "/api/cluster/status",
          "/api/cluster/workers",
          "/api/cluster/workers/{id}",
          "/health",
          "/ready",
          "/v1/chat/completions",
          "/v1/completions",
          "/v1/models",
          "/v1/models/{id}"
        ].sort()
      )
      expect(Object.keys(doc.paths["/v1/chat/completions"]?.["post"]?.responses["200"]?.content ?? {})).toContain("text/event-stream")
      // Every $ref points at a schema the document defines.
      const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] ?? "")
      const schemas = (doc as unknown as { components: { schemas: Record<string, unknown> } }).components.schemas
      expect(refs.length).toBeGreaterThan(0)
      expect(refs.filter((name) => !(name in schemas))).toEqual([])
      const docs = yield* Effect.flatMap(baseUrl, (url) => Effect.promise(() => fetch(`${url}/docs`).then((r) => r.text())))
      expect(docs).toContain("swagger")
      // Issue 12: the package's version, a bearer scheme "Try it out" can use, the error body really sent.
      const full = doc as unknown as {
        info: { version: string }
        security: unknown
        components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> }
        paths: Record<string, Record<string, { security?: unknown; responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>
      }
      expect(full.info.version).toBe(VERSION)
      expect(full.components.securitySchemes["bearerAuth"]).toMatchObject({ type: "http", scheme: "bearer" })
      expect(full.security).toEqual([{ bearerAuth: [] }])
      expect(full.paths["/v1/chat/completions"]?.["post"]?.security).toEqual([{ bearerAuth: [] }])
      expect(full.paths["/health"]?.["get"]?.security).toEqual([])
      expect(full.paths["/v1/chat/completions"]?.["post"]?.responses["400"]?.content?.["application/json"]?.schema).toEqual({
        $ref: "#/components/schemas/InvalidRequestError"
      })
      expect(full.components.schemas["InvalidRequestError"]).toMatchObject({ required: ["error"] })
      expect(JSON.stringify(doc)).not.toContain("HttpApiDecodeError")
      expect(docs).toContain(VERSION)
    })
  )

  it.effect("/metrics exposes Prometheus text (seconds, _total, workers by status)", () =>
    Effect.gen(function* () {
      const text = yield* Effect.flatMap(baseUrl, (url) => Effect.promise(() => fetch(`${url}/metrics`).then((r) => r.text())))
      expect(text).toMatch(/mlx_cluster_requests_total\{[^}]*outcome="succeeded"[^}]*\} \d+/)
      expect(text).toContain("mlx_cluster_time_to_first_token_seconds_bucket")
      expect(text).toMatch(/mlx_cluster_workers\{[^}]*status="online"[^}]*\} 3/)
      expect(text).toContain("mlx_cluster_tokens_relayed_total")
    })
  )
})

describe("a stopped worker", () => {
  it.scopedLive("its requests are served by the others", () =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        workerLayer(natsUrl, { id: "stop-keep", models: ["stop/model"] }).pipe(Layer.provideMerge(controllerLayer(natsUrl)))
      )
      const url = yield* Effect.provide(baseUrl, context)
      const leaving = yield* Scope.make()
      yield* Scope.extend(Layer.build(workerLayer(natsUrl, { id: "stop-leave", models: ["stop/model", "stop/only-here"] })), leaving)
      const online = (id: string) =>
        Effect.promise(() =>
          fetch(`${url}/api/cluster/workers/${id}`).then(async (r) => r.status === 200 && ((await r.json()) as { status: string }).status === "online")
        )
      yield* eventually(Effect.map(Effect.all([online("stop-keep"), online("stop-leave")]), ([a, b]) => a && b))
      yield* Scope.close(leaving, Exit.void)
      yield* eventually(Effect.map(online("stop-leave"), (up) => !up))
      const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 })
      const answers = yield* Effect.forEach(
        [1, 2, 3, 4],
        (i) =>
          Effect.promise(() =>
            openai.chat.completions.create({ model: "stop/model", messages: [{ role: "user", content: `q${i}` }], max_tokens: 3 })
          ),
        { concurrency: 4 }
      )
      expect(answers.map((a) => a.choices[0]?.finish_reason)).toEqual(["length", "length", "length", "length"])
      const left = (yield* getJsonAt(url, "/api/cluster/workers/stop-leave")) as { status: string; statusReason?: string }
      expect(left).toMatchObject({ status: "offline", statusReason: "deregistered" })
      // A model only the stopped worker registered: 404, and the message says why (not "no worker has registered it").
      const gone = yield* Effect.promise(() =>
        fetch(`${url}/v1/models/stop%2Fonly-here`).then(async (r) => ({ status: r.status, body: (await r.json()) as { error: { code: string; message: string } } }))
      )
      expect(gone.status).toBe(404)
      expect(gone.body.error).toMatchObject({ code: "model_not_found", message: expect.stringContaining("only offline workers registered it") })
      yield* eventually(
        Effect.map(getJsonAt(url, "/api/cluster/workers/stop-keep"), (w) => ((w as { metrics?: { requests: { total: number } } }).metrics?.requests.total ?? 0) >= 4)
      )
    })
  )
})

describe("streaming is not buffered", () => {
  it.scopedLive("chunks of a slow worker arrive one by one, as they are made", () =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        workerLayer(natsUrl, { id: "slow-w1", models: ["slow/model"], tokensPerSecond: 25 }).pipe(
          Layer.provideMerge(controllerLayer(natsUrl))
        )
      )
      const url = yield* Effect.provide(baseUrl, context)
      yield* eventually(
        Effect.promise(() => fetch(`${url}/api/cluster/workers/slow-w1`).then((r) => r.status === 200))
      )
      const arrivals = yield* Effect.promise(async () => {
        const response = await fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "slow/model", messages: [{ role: "user", content: "hi" }], max_tokens: 6, stream: true })
        })
        expect(response.headers.get("content-type")).toContain("text/event-stream")
        const reader = response.body!.getReader()
        const times: Array<number> = []
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          if (new TextDecoder().decode(value).includes('"content":"')) times.push(Date.now())
        }
        return times
      })
      // 6 tokens at 25/s: about 40 ms apart, so they cannot all arrive in one read.
      expect(arrivals.length).toBeGreaterThanOrEqual(4)
      expect((arrivals[arrivals.length - 1] ?? 0) - (arrivals[0] ?? 0)).toBeGreaterThan(100)
    })
  )
})

import { describe, expect, inject, it, layer } from "@effect/vitest"
import { Clock, Effect, Either, Exit, Layer, Redacted, Scope } from "effect"
import { defaultClusterConfig } from "../../src/config/schema.js"
import { decodeFrame, toRouteRequest } from "../../src/http/websocket.js"
import { eventually } from "../support/eventually.js"
import { FakeWorker } from "../support/fake-worker.js"
import { apiConfig, baseUrl, testServerLayer, unique } from "./support/test-server.js"
import { connectWs, repliesOf, wsUrl } from "./support/ws-client.js"

const natsUrl = inject("natsUrl")
const MODEL = unique("test-ws/model")

const tokens = (n: number) => Array.from({ length: n }, (_, i) => ({ token: `t${i} `, index: i }))

describe("decodeFrame / toRouteRequest", () => {
  it("reads inference and cancel messages", () => {
    expect(decodeFrame(JSON.stringify({ type: "cancel", id: "a" }))).toEqual(Either.right({ type: "cancel", id: "a" }))
    const inference = decodeFrame(JSON.stringify({ type: "inference", data: { model: "m", prompt: "p" } }))
    expect(inference).toEqual(Either.right({ type: "inference", data: { model: "m", prompt: "p" } }))
  })

  it("names the field that is wrong and keeps the id it could read", () => {
    expect(decodeFrame("{ nope")).toEqual(Either.left({ id: null, message: "message is not valid JSON" }))
    const missing = decodeFrame(JSON.stringify({ type: "inference", id: "x", data: { prompt: "p" } }))
    expect(missing).toEqual(Either.left({ id: "x", message: expect.stringContaining("data.model") }))
    const both = decodeFrame(JSON.stringify({ type: "inference", id: "y", data: { model: "m", prompt: "p", messages: [] } }))
    expect(Either.isLeft(both)).toBe(true)
    const neither = decodeFrame(JSON.stringify({ type: "inference", id: "z", data: { model: "m" } }))
    expect(neither).toEqual(Either.left({ id: "z", message: expect.stringContaining("exactly one of prompt or messages") }))
    const unknownType = decodeFrame(JSON.stringify({ type: "hello", id: 7 }))
    expect(unknownType).toEqual(
      Either.left({ id: null, message: 'invalid type: Expected "inference" | "cancel", actual "hello"' })
    )
    const role = decodeFrame(JSON.stringify({ type: "inference", id: "r", data: { model: "m", messages: [{ role: "bot", content: "" }] } }))
    expect(role).toEqual(
      Either.left({
        id: "r",
        message: 'invalid data.messages[0].role: Expected "system" | "developer" | "user" | "assistant" | "tool" | "function", actual "bot"'
      })
    )
    const zero = decodeFrame(JSON.stringify({ type: "inference", id: "t", data: { model: "m", prompt: "p", maxTokens: 0 } }))
    expect(zero).toEqual(Either.left({ id: "t", message: "invalid data.maxTokens: Expected a positive number, actual 0" }))
    expect(decodeFrame("[1]")).toEqual(Either.left({ id: null, message: 'message must be a JSON object with a "type"' }))
  })

  it("no default maxTokens; above the ceiling is an invalid request naming it", () => {
    const limits = { ...defaultClusterConfig().controller.api, maxTokensCeiling: 64 }
    expect(toRouteRequest({ model: "m", prompt: "p" }, limits)).toEqual(Either.right({ model: "m", prompt: "p", route: "ws" }))
    const above = toRouteRequest({ model: "m", prompt: "p", maxTokens: 1000, temperature: 0.5 }, limits)
    expect(Either.isLeft(above) && above.left).toMatchObject({ param: "maxTokens", message: expect.stringContaining("max_tokens_ceiling") })
    const messages = [{ role: "user" as const, content: "hi" }]
    expect(toRouteRequest({ model: "m", messages, maxTokens: 64 }, limits)).toEqual(
      Either.right({ model: "m", messages, maxTokens: 64, route: "ws" })
    )
    // No ceiling configured (the default): any positive maxTokens goes through as given.
    expect(toRouteRequest({ model: "m", prompt: "p", maxTokens: 100_000 }, defaultClusterConfig().controller.api)).toEqual(
      Either.right({ model: "m", prompt: "p", maxTokens: 100_000, route: "ws" })
    )
  })
})

layer(
  testServerLayer({
    natsUrl,
    workerId: unique("ws-worker"),
    models: [MODEL],
    tokenDelayMs: 10,
    config: apiConfig({ maxBodyBytes: 4096 })
  }),
  { excludeTestServices: true }
)("GET /ws end to end", (it) => {
  it.scoped("streams the tokens of a request in order, then done", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "a", data: { model: MODEL, prompt: "hello", maxTokens: 5 } })
      const replies = yield* ws.finished("a")
      expect(replies.slice(0, 5)).toEqual(tokens(5).map((data) => ({ type: "token", id: "a", data })))
      const done = replies[5]
      expect(replies).toHaveLength(6)
      expect(done).toMatchObject({
        type: "done",
        id: "a",
        data: { totalTokens: 5, finishReason: "length", promptTokens: 3, completionTokens: 5 }
      })
      expect(done?.type === "done" ? done.data.latencyMs : -1).toBeGreaterThanOrEqual(0)
    })
  )

  it.scoped("serves chat messages as well as prompts", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      const messages = [{ role: "user", content: "hi" }]
      yield* ws.send({ type: "inference", id: "chat", data: { model: MODEL, messages, maxTokens: 2 } })
      const replies = yield* ws.finished("chat")
      expect(replies.map((r) => r.type)).toEqual(["token", "token", "done"])
    })
  )

  it.scoped("runs two requests at once on one socket, told apart by id", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const before = (yield* worker.requests).length
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "x", data: { model: MODEL, prompt: "one", maxTokens: 8 } })
      yield* ws.send({ type: "inference", id: "y", data: { model: MODEL, prompt: "two", maxTokens: 4 } })
      const x = yield* ws.finished("x")
      const y = yield* ws.finished("y")
      expect(x.filter((m) => m.type === "token").map((m) => m.data)).toEqual(tokens(8))
      expect(y.filter((m) => m.type === "token").map((m) => m.data)).toEqual(tokens(4))
      expect(x.at(-1)?.type).toBe("done")
      expect(y.at(-1)?.type).toBe("done")
      // Interleaved: y finished while x was still streaming.
      const order = ws.messages.map((m) => (m.type === "ping" ? "ping" : `${m.id}:${m.type}`))
      expect(order.indexOf("y:done")).toBeLessThan(order.indexOf("x:done"))
      expect(order.indexOf("x:token")).toBeLessThan(order.indexOf("y:done"))
      expect((yield* worker.requests).length - before).toBe(2)
    })
  )

  it.scoped("assigns an id when the client omits it and uses it in every reply", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", data: { model: MODEL, prompt: "first", maxTokens: 2 } })
      const first = yield* ws.finished("ws-1")
      expect(first.map((m) => m.type)).toEqual(["token", "token", "done"])
      yield* ws.send({ type: "inference", data: { model: MODEL, prompt: "second", maxTokens: 1 } })
      const second = yield* ws.finished("ws-2")
      expect(second.map((m) => m.type)).toEqual(["token", "done"])
      // A client id that looks like a server id is skipped by the counter while in flight.
      yield* ws.send({ type: "inference", id: "ws-3", data: { model: MODEL, prompt: "slow", maxTokens: 30 } })
      yield* ws.waitFor((m) => m.type === "token" && m.id === "ws-3")
      yield* ws.send({ type: "inference", data: { model: MODEL, prompt: "third", maxTokens: 1 } })
      const fourth = yield* ws.finished("ws-4")
      expect(fourth.map((m) => m.type)).toEqual(["token", "done"])
      yield* ws.finished("ws-3")
    })
  )

  it.scoped("cancel ends the request with error cancelled and tells the worker", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const cancelsBefore = (yield* worker.cancels).length
      const requestsBefore = (yield* worker.requests).length
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "c", data: { model: MODEL, prompt: "long", maxTokens: 60 } })
      yield* ws.waitFor((m) => m.type === "token" && m.id === "c" && m.data.index >= 1)
      yield* ws.send({ type: "cancel", id: "c" })
      const replies = yield* ws.finished("c")
      expect(replies.at(-1)).toEqual({ type: "error", id: "c", data: { code: "cancelled", message: "The request was cancelled" } })
      expect(replies.some((m) => m.type === "done")).toBe(false)
      const requestId = (yield* worker.requests)[requestsBefore]?.requestId
      const cancels = yield* worker.awaitCancels(cancelsBefore + 1)
      expect(cancels.slice(cancelsBefore)).toEqual([requestId])
      const count = repliesOf(ws.messages, "c").length
      // Cancelling something not in flight (finished, or never started) is ignored.
      yield* ws.send({ type: "cancel", id: "c" })
      yield* ws.send({ type: "cancel", id: "never" })
      yield* ws.send({ type: "inference", id: "after", data: { model: MODEL, prompt: "x", maxTokens: 1 } })
      expect((yield* ws.finished("after")).at(-1)?.type).toBe("done")
      expect(repliesOf(ws.messages, "never")).toEqual([])
      // Nothing more for "c" after its error: frames on one socket arrive in order, so anything
      // sent for "c" would have come before "after" finished.
      expect(repliesOf(ws.messages, "c")).toHaveLength(count)
    })
  )

  it.scoped("answers bad messages with invalid_request and keeps the socket usable", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send("this is not json")
      yield* ws.send({ type: "inference", id: "bad", data: { prompt: "no model" } })
      yield* ws.send({ type: "launch", id: "rocket" })
      yield* ws.send({ type: "inference", id: "tokens", data: { model: MODEL, prompt: "p", maxTokens: -3 } })
      const unreadable = (yield* ws.finished(null)).slice(0, 1)
      expect(unreadable).toEqual([{ type: "error", id: null, data: { code: "invalid_request", message: "message is not valid JSON" } }])
      expect(yield* ws.finished("bad")).toEqual([
        { type: "error", id: "bad", data: { code: "invalid_request", message: expect.stringContaining("data.model") } }
      ])
      expect((yield* ws.finished("rocket"))[0]).toMatchObject({ type: "error", data: { code: "invalid_request" } })
      expect((yield* ws.finished("tokens"))[0]).toMatchObject({
        type: "error",
        data: { code: "invalid_request", message: expect.stringContaining("data.maxTokens") }
      })
      yield* ws.send([1, 2, 3])
      yield* ws.waitFor((m) => m.type === "error" && m.data.message.includes("JSON object"))
      // Binary frames are read as UTF-8 JSON too.
      ws.socket.send(Buffer.from(JSON.stringify({ type: "inference", id: "bin", data: { model: MODEL, prompt: "p", maxTokens: 1 } })))
      expect((yield* ws.finished("bin")).map((m) => m.type)).toEqual(["token", "done"])
      yield* ws.send({ type: "inference", id: "ok", data: { model: MODEL, prompt: "still here", maxTokens: 2 } })
      expect((yield* ws.finished("ok")).map((m) => m.type)).toEqual(["token", "token", "done"])
      expect(ws.socket.readyState).toBe(ws.socket.OPEN)
    })
  )

  it.scoped("a frame over max_body_bytes is refused before it is buffered: the socket closes with 1009", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "huge", data: { model: MODEL, prompt: "x".repeat(5000) } })
      expect(yield* ws.closed).toBe(1009)
      // Other sockets are not affected.
      const next = yield* connectWs(wsUrl(yield* baseUrl))
      yield* next.send({ type: "inference", id: "ok", data: { model: MODEL, prompt: "p", maxTokens: 1 } })
      expect((yield* next.finished("ok")).map((m) => m.type)).toEqual(["token", "done"])
    })
  )

  it.scoped("a frame nested 3,000 deep is an invalid_request, and the socket keeps serving", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      const deep = `{"type":"inference","id":"deep","data":{"model":${"[".repeat(1_500)}${"]".repeat(1_500)},"prompt":"p"}}`
      yield* ws.send(deep)
      expect((yield* ws.finished("deep"))[0]).toMatchObject({ type: "error", data: { code: "invalid_request" } })
      yield* ws.send({ type: "inference", id: "after", data: { model: MODEL, prompt: "p", maxTokens: 1 } })
      expect((yield* ws.finished("after")).map((m) => m.type)).toEqual(["token", "done"])
    })
  )

  it.scoped("refuses a second request with an id already in flight", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "dup", data: { model: MODEL, prompt: "one", maxTokens: 10 } })
      yield* ws.waitFor((m) => m.type === "token" && m.id === "dup")
      yield* ws.send({ type: "inference", id: "dup", data: { model: MODEL, prompt: "two", maxTokens: 1 } })
      const error = yield* ws.waitFor((m) => m.type === "error" && m.id === "dup")
      expect(error).toMatchObject({ data: { code: "invalid_request", message: expect.stringContaining("already in flight") } })
      yield* ws.waitFor((m) => m.type === "done" && m.id === "dup")
      const dup = repliesOf(ws.messages, "dup").filter((m) => m.type === "token")
      expect(dup.map((m) => m.data)).toEqual(tokens(10))
    })
  )

  it.scoped("closing the socket cancels every request still running", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const cancelsBefore = (yield* worker.cancels).length
      const requestsBefore = (yield* worker.requests).length
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "p", data: { model: MODEL, prompt: "long", maxTokens: 60 } })
      yield* ws.send({ type: "inference", id: "q", data: { model: MODEL, prompt: "long", maxTokens: 60 } })
      yield* ws.waitFor((m) => m.type === "token" && m.id === "p")
      yield* ws.waitFor((m) => m.type === "token" && m.id === "q")
      yield* ws.close
      expect(yield* ws.closed).toBe(1000)
      const cancels = yield* worker.awaitCancels(cancelsBefore + 2)
      const started = (yield* worker.requests).slice(requestsBefore).map((r) => r.requestId)
      expect([...cancels.slice(cancelsBefore)].sort()).toEqual([...started].sort())
    })
  )

  it.scoped("reports a model no worker has registered as model_not_found", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "nope", data: { model: "no/such-model", prompt: "p" } })
      const [error] = yield* ws.finished("nope")
      expect(error).toMatchObject({
        type: "error",
        id: "nope",
        data: { code: "model_not_found", message: expect.stringContaining("no/such-model") }
      })
    })
  )

  it.scoped("reports a worker failure after the first token with the worker's own error code", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "boom", data: { model: MODEL, prompt: "fail", maxTokens: 5 } })
      const replies = yield* ws.finished("boom")
      expect(replies.map((m) => m.type)).toEqual(["token", "error"])
      expect(replies[1]).toMatchObject({ data: { code: "engine_error", message: "the fake engine failed" } })
    })
  )

  it.scoped("refuses maxTokens above the ceiling; sends none when the client gives none", () =>
    Effect.gen(function* () {
      const worker = yield* FakeWorker
      const before = (yield* worker.requests).length
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* ws.send({ type: "inference", id: "big", data: { model: MODEL, prompt: "p", maxTokens: 100_000, temperature: 0.2 } })
      const refused = yield* ws.waitFor((m) => m.type === "error" && m.id === "big")
      expect(refused).toMatchObject({ data: { code: "invalid_request", message: expect.stringContaining("above this cluster's limit of 64") } })
      yield* ws.send({ type: "inference", id: "default", data: { model: MODEL, prompt: "p", temperature: 0.2 } })
      const replies = yield* ws.finished("default")
      // The fake engine's own limit (16 tokens) applies.
      expect(replies.filter((m) => m.type === "token")).toHaveLength(16)
      const seen = (yield* worker.requests).slice(before)
      expect(seen).toHaveLength(1)
      expect(seen[0]?.maxTokens).toBeUndefined()
      expect(seen[0]?.temperature).toBe(0.2)
    })
  )

  it.scoped("keeps the connection alive with protocol pings from the start, before the client sent anything", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl))
      yield* eventually(Effect.sync(() => ws.pings() >= 1), { timeoutMs: 2_000 })
      expect(ws.messages.filter((m) => m.type === "ping")).toEqual([])
    })
  )

  it.effect("answers a plain GET /ws (no upgrade) with 426", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      const res = yield* Effect.promise(() => fetch(`${base}/ws`))
      expect(res.status).toBe(426)
      expect(yield* Effect.promise(() => res.json())).toMatchObject({ error: { code: "upgrade_required" } })
    })
  )
})

layer(
  testServerLayer({
    natsUrl,
    workerId: unique("ws-key-worker"),
    models: [MODEL],
    config: apiConfig({ apiKeys: [Redacted.make("sekret")] })
  }),
  { excludeTestServices: true }
)("GET /ws behind the server's API key middleware", (it) => {
  it.scoped("refuses the upgrade without a valid key", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      const none = yield* Effect.flip(connectWs(wsUrl(base)))
      expect(none.message).toBe("unexpected response 401")
      const wrong = yield* Effect.flip(connectWs(wsUrl(base), { authorization: "Bearer nope" }))
      expect(wrong.message).toBe("unexpected response 401")
    })
  )

  it.scoped("accepts the key as ?api_key= (browsers cannot set headers on a WebSocket), and refuses a wrong one", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      const wrong = yield* Effect.flip(connectWs(`${wsUrl(base)}?api_key=nope`))
      expect(wrong.message).toBe("unexpected response 401")
      const ws = yield* connectWs(`${wsUrl(base)}?api_key=sekret`)
      yield* ws.send({ type: "inference", id: "q", data: { model: MODEL, prompt: "p", maxTokens: 1 } })
      expect((yield* ws.finished("q")).at(-1)?.type).toBe("done")
    })
  )

  it.scoped("accepts the key as a bearer header", () =>
    Effect.gen(function* () {
      const ws = yield* connectWs(wsUrl(yield* baseUrl), { authorization: "Bearer sekret" })
      yield* ws.send({ type: "inference", id: "h", data: { model: MODEL, prompt: "p", maxTokens: 1 } })
      expect((yield* ws.finished("h")).at(-1)?.type).toBe("done")
    })
  )
})

describe("GET /ws shutdown", () => {
  it.live("closing the server closes open sockets at once, requests still running", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        testServerLayer({ natsUrl, workerId: unique("ws-stop-worker"), models: [MODEL], tokenDelayMs: 20 }),
        scope
      )
      const base = yield* Effect.provide(baseUrl, context)
      const ws = yield* connectWs(wsUrl(base)).pipe(Scope.extend(scope))
      yield* ws.send({ type: "inference", id: "s", data: { model: MODEL, prompt: "long", maxTokens: 60 } })
      yield* ws.waitFor((m) => m.type === "token" && m.id === "s")
      const started = yield* Clock.currentTimeMillis
      yield* Scope.close(scope, Exit.void)
      expect((yield* Clock.currentTimeMillis) - started).toBeLessThan(3_000)
      expect(yield* ws.closed).toBeGreaterThanOrEqual(1000)
      expect(repliesOf(ws.messages, "s").some((m) => m.type === "done")).toBe(false)
    })
  )
})

import { describe, expect, inject, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope, Stream } from "effect"
import { ClusterClient, layer as clusterClientLayer } from "../../src/rpc-client.js"
import { startController, untilWorkerOnline } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { countingTokens, type FakeWorkerSpec, startFakeWorker } from "../support/fake-worker.js"
import { unique } from "./support/test-server.js"
import { connectWs, wsUrl } from "./support/ws-client.js"

/**
 * Request migration end to end (issue 13), for each front door sharing the Router — SSE, WebSocket
 * and RPC: a real controller over the test run's nats-server, fake workers that answer probes and
 * continue answers (token `tN ` is always the N-th of the answer). Worker A streams; once the client
 * has 3 tokens A's NATS connection closes; the controller's probe finds no responders and the rest
 * comes from B: one stream, indexes 0..19, one done counting 20 tokens, `migrations: 1`.
 */

const natsUrl = inject("natsUrl")
const MAX_TOKENS = 20
const TOKEN_MS = 100
const expectedText = Array.from({ length: MAX_TOKENS }, (_, i) => `t${i} `).join("")

/** A fake worker in a scope of its own: `kill` closes its NATS connection, as a SIGKILL would. */
const killableWorker = (spec: FakeWorkerSpec) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const worker = yield* startFakeWorker(natsUrl, spec, countingTokens(TOKEN_MS)).pipe(Scope.extend(scope))
    return { worker, kill: Scope.close(scope, Exit.void) }
  })

type Controller = Effect.Effect.Success<ReturnType<typeof startController>>

/**
 * Worker A alone (so it gets the request), `start` sends the request; once A has it, B joins; once
 * the client saw 3 tokens (`tokensSeen`, given when A got the request), A dies.
 */
const migrateMidStream = <A>(
  { registry }: Controller,
  start: (model: string) => Effect.Effect<A, unknown, Scope.Scope>,
  tokensSeen: (dispatchedAt: number) => number
) =>
  Effect.gen(function* () {
    const model = unique("migrate/model")
    const continuation = ["chat", "completions"]
    const a = yield* killableWorker({ id: unique("a"), models: [model], probes: true, continuation })
    yield* untilWorkerOnline(registry, a.worker.workerId)
    const result = yield* Effect.fork(start(model))
    yield* a.worker.awaitRequests(1)
    const dispatchedAt = Date.now()
    const b = yield* startFakeWorker(natsUrl, { id: unique("b"), models: [model], probes: true, continuation }, countingTokens(TOKEN_MS))
    yield* untilWorkerOnline(registry, b.workerId)
    yield* eventually(Effect.sync(() => tokensSeen(dispatchedAt) >= 3))
    yield* a.kill
    const value = yield* result.await.pipe(Effect.flatten)
    const [request] = yield* b.awaitRequests(1)
    return { value, continued: request, a: a.worker.workerId, b: b.workerId }
  })

describe("a stream whose worker dies continues on another worker, for every front door (issue 13)", () => {
  it.scopedLive(
    "SSE: one stream, indexes and text continuous, [DONE], usage 20, migrations on the usage chunk",
    () =>
      Effect.gen(function* () {
        const controller = yield* startController(natsUrl)
        const { url } = controller
        let tokens = 0
        const run = (model: string) =>
          Effect.promise(async () => {
            const res = await fetch(`${url}/v1/chat/completions`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({
                model,
                messages: [{ role: "user", content: "count for me" }],
                max_tokens: MAX_TOKENS,
                stream: true,
                stream_options: { include_usage: true }
              }),
              signal: AbortSignal.timeout(20_000)
            })
            const events: Array<string> = []
            const decoder = new TextDecoder()
            let buffer = ""
            const reader = res.body?.getReader()
            for (let read = await reader?.read(); read !== undefined && !read.done; read = await reader?.read()) {
              buffer += decoder.decode(read.value, { stream: true })
              for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
                const event = buffer.slice(0, end).replace(/^data: /, "")
                buffer = buffer.slice(end + 2)
                events.push(event)
                if (event.includes('"content":"t')) tokens++
              }
            }
            return events
          })
        const { value: events, continued } = yield* migrateMidStream(controller, run, () => tokens)
        expect(events.at(-1)).toBe("[DONE]")
        type Chunk = { choices: Array<{ delta?: { content?: string } }>; usage?: unknown; migrations?: number; error?: unknown }
        const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk)
        expect(chunks.filter((c) => c.error !== undefined)).toEqual([])
        expect(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("")).toBe(expectedText)
        expect(chunks.at(-1)).toMatchObject({ usage: { prompt_tokens: 3, completion_tokens: MAX_TOKENS }, migrations: 1 })
        expect(continued?.continuation?.completionTokens).toBeGreaterThanOrEqual(3)
        expect(continued?.maxTokens).toBe(MAX_TOKENS - (continued?.continuation?.completionTokens ?? 0))
      }),
    30_000
  )

  it.scopedLive(
    "a non-streamed answer: the whole text, usage 20, and the x-cluster-migrations header",
    () =>
      Effect.gen(function* () {
        const controller = yield* startController(natsUrl)
        const { url } = controller
        const run = (model: string) =>
          Effect.promise(async () => {
            const res = await fetch(`${url}/v1/completions`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ model, prompt: "count for me", max_tokens: MAX_TOKENS }),
              signal: AbortSignal.timeout(20_000)
            })
            return { header: res.headers.get("x-cluster-migrations"), body: (await res.json()) as Record<string, unknown> }
          })
        // Nothing reaches the client before the answer is whole: A has sent about 3 tokens (100 ms each) after 300 ms.
        const { value } = yield* migrateMidStream(controller, run, (dispatchedAt) => Math.floor((Date.now() - dispatchedAt) / TOKEN_MS))
        expect(value.header).toBe("1")
        expect(value.body).toMatchObject({
          choices: [{ text: expectedText, finish_reason: "length" }],
          usage: { prompt_tokens: 3, completion_tokens: MAX_TOKENS }
        })
      }),
    30_000
  )

  it.scopedLive(
    "WebSocket: tokens 0..19 in order, one done with totalTokens 20 and migrations 1",
    () =>
      Effect.gen(function* () {
        const controller = yield* startController(natsUrl)
        const { url } = controller
        const ws = yield* connectWs(wsUrl(url))
        const run = (model: string) =>
          Effect.gen(function* () {
            yield* ws.send({ type: "inference", id: "m", data: { model, prompt: "count for me", maxTokens: MAX_TOKENS } })
            return yield* ws.finished("m")
          })
        const { value: replies } = yield* migrateMidStream(controller, run, () => ws.messages.filter((m) => m.type === "token").length)
        const tokens = replies.filter((r) => r.type === "token")
        expect(tokens.map((t) => (t.type === "token" ? [t.data.index, t.data.token] : []))).toEqual(
          Array.from({ length: MAX_TOKENS }, (_, i) => [i, `t${i} `])
        )
        expect(replies.at(-1)).toMatchObject({
          type: "done",
          id: "m",
          data: { totalTokens: MAX_TOKENS, completionTokens: MAX_TOKENS, finishReason: "length", migrations: 1 }
        })
        expect(replies.filter((r) => r.type === "error")).toEqual([])
      }),
    30_000
  )

  it.scopedLive(
    "RPC: Generate streams tokens 0..19 and a done with usage 20 and migrations 1",
    () =>
      Effect.gen(function* () {
        const controller = yield* startController(natsUrl)
        const { url } = controller
        const client = Context.get(yield* Layer.build(clusterClientLayer({ url: `${url}/rpc` })), ClusterClient)
        let tokens = 0
        const run = (model: string) =>
          client.Generate({ model, prompt: "count for me", maxTokens: MAX_TOKENS }).pipe(
            Stream.tap((e) =>
              Effect.sync(() => {
                if (e.type === "token") tokens++
              })
            ),
            Stream.runCollect
          )
        const { value, b } = yield* migrateMidStream(controller, run, () => tokens)
        const items = [...value]
        expect(items.filter((e) => e.type === "token").map((e) => (e.type === "token" ? [e.index, e.token] : []))).toEqual(
          Array.from({ length: MAX_TOKENS }, (_, i) => [i, `t${i} `])
        )
        expect(items.at(-1)).toMatchObject({
          type: "done",
          finishReason: "length",
          usage: { promptTokens: 3, completionTokens: MAX_TOKENS },
          workerId: b,
          migrations: 1
        })
      }),
    30_000
  )
})

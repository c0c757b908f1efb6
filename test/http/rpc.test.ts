import { describe, expect, inject, it, layer } from "@effect/vitest"
import { Chunk, Clock, Effect, Layer, Redacted, Stream } from "effect"
import { InvalidRequest, ModelNotFound, WorkerNotFound } from "../../src/domain/errors.js"
import { ClusterClient, describeError, layer as clusterClientLayer } from "../../src/rpc-client.js"
import { FakeWorker } from "../support/fake-worker.js"
import { apiConfig, baseUrl, testServerLayer, unique } from "./support/test-server.js"

const natsUrl = inject("natsUrl")
const MODEL = unique("test-rpc/model")

const ServerLive = testServerLayer({ natsUrl, workerId: unique("rpc-worker"), models: [MODEL], tokenDelayMs: 25 })
const ClientLive = Layer.unwrapEffect(Effect.map(baseUrl, (base) => clusterClientLayer({ url: `${base}/rpc` })))

layer(ClientLive.pipe(Layer.provideMerge(ServerLive)), { excludeTestServices: true })("/rpc end to end", (it) => {
  it.effect("ClusterStatus reports the ready controller and its workers", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const status = yield* cluster.ClusterStatus()
      expect(status.controller.state).toBe("ready")
      expect(status.controller.mode).toBe("controller")
      expect(status.workers.online).toBeGreaterThanOrEqual(1)
      expect(status.requests.successRate).toBeGreaterThanOrEqual(0)
    })
  )

  it.effect("ListWorkers and GetWorker return the registered worker", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const worker = yield* FakeWorker
      const all = yield* cluster.ListWorkers()
      const mine = all.find((w) => w.workerId === worker.workerId)
      expect(mine).toMatchObject({ status: "online", skills: { availableModels: [MODEL] } })
      const one = yield* cluster.GetWorker({ workerId: worker.workerId })
      expect(one.workerId).toBe(worker.workerId)
      expect(one.hardware.chip).toBe("Apple M2 Max")
    })
  )

  it.effect("GetWorker of an unknown id fails with WorkerNotFound", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const error = yield* Effect.flip(cluster.GetWorker({ workerId: "no-such-worker" }))
      expect(error).toBeInstanceOf(WorkerNotFound)
      expect(error).toMatchObject({ _tag: "WorkerNotFound", workerId: "no-such-worker" })
      expect(describeError(error as WorkerNotFound)).toBe('No worker with id "no-such-worker" (worker_not_found)')
    })
  )

  it.effect("Generate streams the tokens as they are produced, then done", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const worker = yield* FakeWorker
      const start = yield* Clock.currentTimeMillis
      const items = yield* cluster.Generate({ model: MODEL, prompt: "hello", maxTokens: 8 }).pipe(
        Stream.mapEffect((event) => Effect.map(Clock.currentTimeMillis, (at) => ({ event, at: at - start }))),
        Stream.runCollect,
        Effect.map(Chunk.toReadonlyArray)
      )
      expect(items.length).toBe(9)
      expect(items.slice(0, 8).map((i) => i.event)).toEqual(
        Array.from({ length: 8 }, (_, index) => ({ type: "token", index, token: `t${index} ` }))
      )
      expect(items[8]?.event).toMatchObject({
        type: "done",
        finishReason: "length",
        usage: { promptTokens: 3, completionTokens: 8 },
        workerId: worker.workerId
      })
      // 25 ms per token: the first token arrives long before the end, not batched with it.
      const first = items[0]?.at ?? 0
      const last = items[8]?.at ?? 0
      expect(last - first).toBeGreaterThan(100)
    })
  )

  it.effect("Generate sends no maxTokens when given none, refuses one above the ceiling, and accepts chat messages", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const worker = yield* FakeWorker
      const before = (yield* worker.requests).length
      const events = yield* cluster
        .Generate({ model: MODEL, messages: [{ role: "user", content: "hi" }] })
        .pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray))
      // The fake engine's own limit (16) applies.
      expect(events.filter((e) => e.type === "token")).toHaveLength(16)
      const seen = yield* worker.awaitRequests(before + 1)
      expect(seen[before]).toMatchObject({ messages: [{ role: "user", content: "hi" }] })
      expect(seen[before]?.maxTokens).toBeUndefined()
      const above = yield* cluster.Generate({ model: MODEL, prompt: "p", maxTokens: 100_000 }).pipe(Stream.runDrain, Effect.flip)
      expect(above).toMatchObject({ _tag: "InvalidRequest", param: "maxTokens" })
    })
  )

  it.effect("Generate of a model nobody has registered fails with ModelNotFound", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const error = yield* cluster.Generate({ model: "no/such-model", prompt: "p" }).pipe(Stream.runDrain, Effect.flip)
      expect(error).toBeInstanceOf(ModelNotFound)
      expect(describeError(error as ModelNotFound)).toContain("(model_not_found)")
    })
  )

  it.effect("Generate needs exactly one of prompt or messages", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const error = yield* cluster.Generate({ model: MODEL }).pipe(Stream.runDrain, Effect.flip)
      expect(error).toBeInstanceOf(InvalidRequest)
    })
  )

  it.effect("a hostile or ill-typed Generate payload is one line naming the field, never a 500 or an echo of the value", () =>
    Effect.gen(function* () {
      const base = yield* baseUrl
      // What @effect/rpc's own client sends: one NDJSON request line.
      const call = (payloadJson: string, tag = "Generate") =>
        Effect.promise(async () => {
          const res = await fetch(`${base}/rpc`, {
            method: "POST",
            headers: { "content-type": "application/ndjson" },
            body: `{"_tag":"Request","id":"1","tag":"${tag}","payload":${payloadJson},"headers":[]}\n`
          })
          return { status: res.status, text: await res.text() }
        })
      const deep = yield* call(`{"model":${"[".repeat(100_000)}${"]".repeat(100_000)},"prompt":"p"}`)
      expect(deep.status).toBe(200)
      expect(deep.text).toContain("invalid Generate request: model")
      expect(deep.text).toContain("nested deeper than 64 levels")
      expect(deep.text.length).toBeLessThan(2_000)
      const wrongType = yield* call(`{"model":5,"prompt":"p"}`)
      expect(wrongType.text).toContain("invalid Generate request: model: Expected string, actual 5")
      const deepId = yield* call(`{"workerId":${"[".repeat(100_000)}${"]".repeat(100_000)}}`, "GetWorker")
      expect(deepId.status).toBe(200)
      expect(deepId.text).toContain("invalid GetWorker request: workerId")
    })
  )

  it.effect("interrupting a Generate stream cancels the work on the worker", () =>
    Effect.gen(function* () {
      const cluster = yield* ClusterClient
      const worker = yield* FakeWorker
      const cancelsBefore = (yield* worker.cancels).length
      const got = yield* cluster.Generate({ model: MODEL, prompt: "long", maxTokens: 60 }).pipe(Stream.take(2), Stream.runCollect)
      expect(Chunk.size(got)).toBe(2)
      const cancels = yield* worker.awaitCancels(cancelsBefore + 1)
      expect(cancels.length).toBe(cancelsBefore + 1)
    })
  )
})

describe("describeError", () => {
  it.effect("explains an unreachable controller in one line", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Effect.flatMap(ClusterClient, (c) => c.ClusterStatus()).pipe(
          Effect.provide(clusterClientLayer({ url: "http://127.0.0.1:9/rpc" }))
        )
      )
      expect(describeError(error)).toMatch(/^cannot reach the controller at http:\/\/127\.0\.0\.1:9\/rpc/)
    })
  )
})

layer(
  testServerLayer({
    natsUrl,
    workerId: unique("rpc-key-worker"),
    models: [MODEL],
    config: apiConfig({ apiKeys: [Redacted.make("rpc-key")] })
  }),
  { excludeTestServices: true }
)("/rpc behind the server's API key middleware", (it) => {
  const status = (apiKey?: string) =>
    Effect.flatMap(baseUrl, (base) =>
      Effect.flatMap(ClusterClient, (c) => c.ClusterStatus()).pipe(
        Effect.provide(clusterClientLayer({ url: `${base}/rpc`, ...(apiKey === undefined ? {} : { apiKey }) }))
      )
    )

  it.effect("refuses a call without the key with a readable 401", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(status())
      expect(error._tag).toBe("RpcClientError")
      expect(describeError(error)).toMatch(/answered HTTP 401 .*API key/)
      const wrong = yield* Effect.flip(status("wrong"))
      expect(describeError(wrong)).toContain("401")
    })
  )

  it.effect("accepts the key as a bearer token", () =>
    Effect.gen(function* () {
      const result = yield* status("rpc-key")
      expect(result.controller.state).toBe("ready")
    })
  )
})

import { describe, expect, inject, it } from "@effect/vitest"
import { Chunk, Context, Effect, Exit, Fiber, Layer, Logger, Option, Schema, Scope, Stream } from "effect"
import { connect } from "nats"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../src/config/schema.js"
import {
  InferenceReply,
  InferenceRequest,
  type TokenBatch,
  type TokenMessage,
  TokenMessage as TokenMessageSchema
} from "../../src/domain/inference.js"
import { Subjects } from "../../src/domain/subjects.js"
import {
  ControllerAnnounce,
  WorkerDeregistration,
  WorkerHeartbeat,
  WorkerRegistration
} from "../../src/domain/worker.js"
import { NatsTransport, type NatsTransportService } from "../../src/nats/nats-transport.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { FEATURES } from "../../src/domain/features.js"
import { planSynthetic } from "../../src/worker/engines/synthetic-engine.js"
import { Worker, WorkerLive } from "../../src/worker/worker-live.js"
import { testHttpServer } from "./support/http-server.js"
import { makeModelFixture, tmpDir } from "./support/model-fixtures.js"
import { eventually, realSleep } from "../support/eventually.js"
import { contiguousIndexes, inferenceRequest, tokensOf } from "./support/worker-harness.js"

const natsUrl = inject("natsUrl")

const uniqueId = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`

/** A NATS connection for the test itself, playing the controller. */
const controllerSide = Effect.map(Layer.build(natsLayer({ url: natsUrl, name: "worker-test-client" })), Context.get(NatsTransport))

type WorkerPatch = (w: ClusterConfig["worker"]) => ClusterConfig["worker"]

/** WorkerLive over a real NATS connection, in its own scope (close = graceful stop). */
const startWorker = (workerId: string, modelDir: string, patch: WorkerPatch = (w) => w, heartbeatIntervalMs = 5_000) =>
  Effect.gen(function* () {
    const logs: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      logs.push(`${logLevel.label} ${Array.isArray(message) ? message.map(String).join(" ") : String(message)}`)
    })
    const config = ClusterConfigService.layerTest((c) => ({
      ...c,
      discovery: { ...c.discovery, heartbeatIntervalMs },
      worker: patch({ ...c.worker, id: workerId, modelDir, maxConcurrent: 3, drainTimeoutMs: 5_000 })
    }))
    const layer = WorkerLive.pipe(Layer.provide(natsLayer({ url: natsUrl, name: workerId })), Layer.provide(config))
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    return { worker: Context.get(context, Worker), logs, close: Scope.close(scope, Exit.void) }
  })

/** Collects the token messages of one request until its `done`/`error`. */
const collectResponse = (client: NatsTransportService, requestId: string) =>
  Effect.gen(function* () {
    const stream = yield* client.subscribe(Subjects.response(requestId), TokenMessageSchema)
    return yield* stream.pipe(
      Stream.map((m) => m.data),
      Stream.takeUntil((m) => m.type === "done" || m.type === "error"),
      Stream.runCollect,
      Effect.map(Chunk.toReadonlyArray),
      Effect.timeout("10 seconds"),
      Effect.fork
    )
  })

const ask = (client: NatsTransportService, workerId: string, request: InferenceRequest) =>
  client.request(Subjects.inference(workerId), InferenceRequest, request, InferenceReply, { timeoutMs: 3_000 })

const syntheticAt = (tokensPerSecond: number): WorkerPatch => (w) => ({
  ...w,
  engine: { ...w.engine, type: "synthetic", synthetic: { ...w.engine.synthetic, tokensPerSecond, firstTokenMs: 0 } }
})

describe("WorkerLive against a real nats-server", () => {
  it.scopedLive("registers exactly the skills, sizes and paths its folders imply; decodable by the domain schema", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const fixture = makeModelFixture(yield* tmpDir())
      const workerId = uniqueId("reg")
      const registrations = yield* client.subscribe(Subjects.register, WorkerRegistration)
      const first = yield* registrations.pipe(
        Stream.filter((m) => m.data.workerId === workerId),
        Stream.runHead,
        Effect.timeout("10 seconds"),
        Effect.fork
      )
      const { logs } = yield* startWorker(workerId, fixture.modelDir, (w) => ({ ...w, hfCacheDir: fixture.hfCacheDir }))
      const registration = Option.getOrThrow(yield* Fiber.join(first)).data
      const names = Object.keys(fixture.expected).sort()
      expect(registration.skills.availableModels).toEqual(names)
      expect(registration.skills.modelPaths).toEqual(Object.fromEntries(names.map((n) => [n, fixture.expected[n]?.path])))
      expect(registration.skills.modelSizes).toEqual(Object.fromEntries(names.map((n) => [n, fixture.expected[n]?.size])))
      expect(registration.skills.totalModelSize).toBe(names.reduce((t, n) => t + (fixture.expected[n]?.size ?? 0), 0))
      expect(registration.capabilities).toEqual({
        maxConcurrent: 3,
        supportsStreaming: true,
        engine: "synthetic",
        probes: true,
        continuation: ["chat", "completions"],
        features: [...FEATURES]
      })
      expect(registration.hardware.platform).toBe(process.platform)
      expect(registration.hardware.cpuCores).toBeGreaterThan(0)
      expect(logs.filter((l) => l.includes("registered"))).toEqual([`INFO worker ${workerId} registered`])
    })
  )

  it.scopedLive("streams ordered tokens and exactly one done with correct usage", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("stream")
      yield* startWorker(workerId, yield* tmpDir(), syntheticAt(0))
      const request = inferenceRequest({ maxTokens: 25, messages: [{ role: "user", content: "one two three four" }] })
      const response = yield* collectResponse(client, request.requestId)
      expect(yield* ask(client, workerId, request)).toEqual({ accepted: true, workerId, active: 1 })
      const messages = yield* Fiber.join(response)
      const plan = planSynthetic(request)
      const batches = messages.filter((m): m is TokenBatch => m.type === "tokens")
      // unpaced: 25 tokens are one engine group, so one message
      expect(batches.length).toBe(1)
      expect(batches.map((b) => b.index)).toEqual(contiguousIndexes(batches))
      expect(tokensOf(messages)).toEqual(plan.tokens)
      expect(tokensOf(messages).join("")).toBe(plan.tokens.join(""))
      const done = messages.at(-1)
      expect(done).toMatchObject({
        type: "done",
        requestId: request.requestId,
        finishReason: "length",
        usage: { promptTokens: 4, completionTokens: 25 }
      })
      expect(messages.filter((m) => m.type !== "tokens").length).toBe(1)
    })
  )

  it.scopedLive("max_concurrent + 1 simultaneous requests: exactly one busy; an unknown model is model_not_found", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("busy")
      yield* startWorker(workerId, yield* tmpDir(), syntheticAt(20))
      const requests = Array.from({ length: 4 }, () => inferenceRequest({ maxTokens: 40 }))
      const replies = yield* Effect.forEach(requests, (r) => ask(client, workerId, r), { concurrency: "unbounded" })
      expect(replies.filter((r) => r.accepted).length).toBe(3)
      expect(replies.filter((r) => !r.accepted && r.reason === "busy").length).toBe(1)
      const unknown = yield* ask(client, workerId, inferenceRequest({ model: "nobody/has-this" }))
      expect(unknown).toMatchObject({ accepted: false, reason: "model_not_found" })
      for (const r of requests) yield* client.publish(Subjects.cancel(workerId), Schema.Struct({ requestId: Schema.String }), { requestId: r.requestId })
    })
  )

  it.scopedLive("a cancel stops token production within a few ms and no done follows", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("cancel")
      const { worker } = yield* startWorker(workerId, yield* tmpDir(), syntheticAt(200))
      const request = inferenceRequest({ maxTokens: 1_000 })
      const arrivals: Array<{ at: number; message: TokenMessage }> = []
      const stream = yield* client.subscribe(Subjects.response(request.requestId), TokenMessageSchema)
      yield* stream.pipe(
        Stream.runForEach((m) => Effect.sync(() => arrivals.push({ at: performance.now(), message: m.data }))),
        Effect.forkScoped
      )
      expect((yield* ask(client, workerId, request)).accepted).toBe(true)
      yield* eventually(Effect.sync(() => expect(arrivals.length).toBeGreaterThanOrEqual(10)))
      const cancelledAt = performance.now()
      yield* client.publish(Subjects.cancel(workerId), Schema.Struct({ requestId: Schema.String }), {
        requestId: request.requestId
      })
      yield* client.flush
      yield* eventually(Effect.map(worker.running, (n) => expect(n).toBe(0)))
      yield* realSleep(300)
      const late = arrivals.filter((a) => a.at > cancelledAt + 50)
      expect(late).toEqual([])
      expect(arrivals.every((a) => a.message.type === "tokens")).toBe(true)
      const sent = tokensOf(arrivals.map((a) => a.message))
      expect(sent).toEqual(planSynthetic(request).tokens.slice(0, sent.length))
      expect(sent.length).toBeLessThan(planSynthetic(request).tokens.length)
      expect(yield* worker.stats).toMatchObject({ total: 1, succeeded: 0, failed: 0, cancelled: 1 })
    })
  )

  it.scopedLive("a cancel during the first-token delay: nothing at all is sent", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("cancel-early")
      const { worker } = yield* startWorker(workerId, yield* tmpDir(), (w) => ({
        ...w,
        engine: { ...w.engine, type: "synthetic", synthetic: { ...w.engine.synthetic, tokensPerSecond: 0, firstTokenMs: 300 } }
      }))
      const request = inferenceRequest({ maxTokens: 50 })
      const seen: Array<TokenMessage> = []
      const stream = yield* client.subscribe(Subjects.response(request.requestId), TokenMessageSchema)
      yield* stream.pipe(Stream.runForEach((m) => Effect.sync(() => seen.push(m.data))), Effect.forkScoped)
      expect((yield* ask(client, workerId, request)).accepted).toBe(true)
      yield* client.publish(Subjects.cancel(workerId), Schema.Struct({ requestId: Schema.String }), {
        requestId: request.requestId
      })
      yield* eventually(Effect.map(worker.running, (n) => expect(n).toBe(0)))
      yield* realSleep(400)
      expect(seen).toEqual([])
      expect(yield* worker.stats).toMatchObject({ total: 1, cancelled: 1, succeeded: 0, failed: 0 })
    })
  )

  it.scopedLive("an openai upstream answering 500 becomes one error message with the engine's code", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const upstream = yield* testHttpServer((_req, res) => {
        res.writeHead(500)
        res.end("upstream is down")
      })
      const fixture = makeModelFixture(yield* tmpDir())
      const workerId = uniqueId("openai")
      yield* startWorker(workerId, fixture.modelDir, (w) => ({
        ...w,
        engine: { ...w.engine, type: "openai", openai: { ...w.engine.openai, baseUrl: upstream.baseUrl } }
      }))
      const request = inferenceRequest({ model: "tiny" })
      const response = yield* collectResponse(client, request.requestId)
      expect((yield* ask(client, workerId, request)).accepted).toBe(true)
      const messages = yield* Fiber.join(response)
      expect(messages).toEqual([
        {
          type: "error",
          requestId: request.requestId,
          code: "upstream_error",
          message: expect.stringContaining("upstream is down")
        }
      ])
      expect(upstream.received[0]?.body).toMatchObject({ model: "tiny", stream: true })
    })
  )

  it.scopedLive("garbage on the inference subject never crashes the worker; it keeps serving", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("garbage")
      const { worker } = yield* startWorker(workerId, yield* tmpDir(), syntheticAt(0))
      const subject = Subjects.inference(workerId)
      const encoder = new TextEncoder()
      // no reply subject: logged and dropped
      client.send(subject, encoder.encode("{ not json"))
      client.send(subject, new Uint8Array([0xff, 0x00, 0x01]))
      client.send(subject, encoder.encode(JSON.stringify({ requestId: "x" })))
      // a reply subject and a schema-invalid JSON body: invalid_request
      const invalid = yield* client.request(subject, Schema.Unknown, { requestId: "x", model: 3 }, InferenceReply, {
        timeoutMs: 3_000
      })
      expect(invalid).toMatchObject({ accepted: false, reason: "invalid_request" })
      const negative = yield* client.request(
        subject,
        Schema.Unknown,
        { ...inferenceRequest(), maxTokens: 0 },
        InferenceReply,
        { timeoutMs: 3_000 }
      )
      expect(negative).toMatchObject({ accepted: false, reason: "invalid_request", message: expect.stringContaining("maxTokens") })
      // a reply subject and a body that is not JSON: invalid_request too
      const nc = yield* Effect.acquireRelease(
        Effect.promise(() => connect({ servers: natsUrl })),
        (c) => Effect.promise(() => c.close())
      )
      for (const body of [encoder.encode("%%%"), new Uint8Array([0xff, 0x00, 0x01]), new Uint8Array(0)]) {
        const raw = yield* Effect.promise(() => nc.request(subject, body, { timeout: 3_000 }))
        expect(Schema.decodeUnknownSync(InferenceReply)(raw.json())).toMatchObject({
          accepted: false,
          reason: "invalid_request",
          message: expect.stringContaining("invalid inference request")
        })
      }
      // still serving
      const request = inferenceRequest({ maxTokens: 5 })
      const response = yield* collectResponse(client, request.requestId)
      expect((yield* ask(client, workerId, request)).accepted).toBe(true)
      expect((yield* Fiber.join(response)).at(-1)?.type).toBe("done")
      expect((yield* worker.stats).total).toBe(1)
    })
  )

  it.scopedLive("registers again within a second of controller.announce, heartbeats, and deregisters on stop", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("presence")
      const registrations = yield* client.subscribe(Subjects.register, WorkerRegistration)
      const heartbeats = yield* client.subscribe(Subjects.heartbeat, WorkerHeartbeat)
      const deregistrations = yield* client.subscribe(Subjects.deregister, WorkerDeregistration)
      const mine = <A extends { readonly workerId: string }>(s: Stream.Stream<{ readonly data: A }>) =>
        s.pipe(Stream.map((m) => m.data), Stream.filter((d) => d.workerId === workerId))
      const firstTwo = yield* mine(registrations).pipe(Stream.take(2), Stream.runCollect, Effect.timeout("10 seconds"), Effect.fork)
      const { close } = yield* startWorker(workerId, yield* tmpDir(), (w) => w, 200)
      const beat = yield* mine(heartbeats).pipe(Stream.runHead, Effect.timeout("5 seconds"))
      expect(Option.getOrThrow(beat).metrics.requests).toEqual({ active: 0, total: 0, succeeded: 0, failed: 0 })
      const announcedAt = Date.now()
      yield* client.publish(Subjects.announce, ControllerAnnounce, { controllerId: "c-restarted", timestamp: announcedAt })
      const both = Chunk.toReadonlyArray(yield* Fiber.join(firstTwo))
      expect(both.length).toBe(2)
      expect((both[1]?.timestamp ?? 0) - announcedAt).toBeLessThan(1_000)
      const gone = yield* mine(deregistrations).pipe(Stream.runHead, Effect.timeout("10 seconds"), Effect.fork)
      yield* close
      expect(Option.getOrThrow(yield* Fiber.join(gone)).workerId).toBe(workerId)
    })
  )

  it.scopedLive("a second worker with a live worker's id refuses to start and takes none of its requests; once the first stopped, the id is free", () =>
    Effect.gen(function* () {
      const client = yield* controllerSide
      const workerId = uniqueId("twin")
      const first = yield* startWorker(workerId, yield* tmpDir(), syntheticAt(0))
      const refused = yield* Effect.flip(startWorker(workerId, yield* tmpDir(), syntheticAt(0)))
      expect(refused).toMatchObject({ _tag: "WorkerIdInUse", workerId })
      // The first one serves alone: its tokens once, and one `done` on the subject (twins send two).
      const request = inferenceRequest({ maxTokens: 8 })
      const dones: Array<string> = []
      const listener = client.listen(Subjects.response(request.requestId), (m) => {
        if (new TextDecoder().decode(m.data).includes('"type":"done"')) dones.push(m.subject)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => listener.close()))
      const collected = yield* collectResponse(client, request.requestId)
      expect(yield* ask(client, workerId, request)).toMatchObject({ accepted: true })
      const messages = yield* Fiber.join(collected)
      expect(tokensOf(messages)).toEqual(planSynthetic(request).tokens)
      yield* realSleep(300)
      expect(dones).toHaveLength(1)
      // Stopped, the first one leaves nobody on the id's subjects: the refused worker never subscribed.
      yield* first.close
      expect(yield* Effect.flip(ask(client, workerId, inferenceRequest({ maxTokens: 1 })))).toMatchObject({ _tag: "NatsNoResponders" })
      const next = yield* startWorker(workerId, yield* tmpDir(), syntheticAt(0))
      expect(next.worker.workerId).toBe(workerId)
    })
  )
})

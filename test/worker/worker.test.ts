import * as Path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Schema, TestClock } from "effect"
import { Subjects } from "../../src/domain/subjects.js"
import { WorkerDeregistration, WorkerHeartbeat, WorkerRegistration } from "../../src/domain/worker.js"
import { InferenceRequest, TokenMessage } from "../../src/domain/inference.js"
import { EngineError, finish, InferenceEngine } from "../../src/worker/engines/inference-engine.js"
import { makeSyntheticEngine, planSynthetic, syntheticEngineLayer } from "../../src/worker/engines/synthetic-engine.js"
import { buildRegistration, primaryIPv4 } from "../../src/worker/worker-live.js"
import { makeModelFixture, tmpDir, writeBytes, writeText } from "./support/model-fixtures.js"
import { eventually } from "../support/eventually.js"
import { lateClock } from "./support/late-clock.js"
import {
  batchesOf,
  contiguousIndexes,
  type Harness,
  inferenceRequest,
  repliesTo,
  replyTo,
  send,
  startHarness,
  startRequest,
  testHardware,
  tokenMessages,
  tokensOf,
  untilEnded,
  untilRunning
} from "./support/worker-harness.js"

const registrations = (h: Harness) => h.bus.sentOn(Subjects.register, WorkerRegistration)

const paced = (tokensPerSecond: number) => syntheticEngineLayer({ tokensPerSecond, firstTokenMs: 0 })

/** Starts the graceful stop in the background and waits until the worker logs that it drains its one running request. */
const beginDrainOfOne = (h: Harness) =>
  Effect.gen(function* () {
    const closing = yield* Effect.fork(h.close)
    yield* eventually(Effect.sync(() => expect(h.logs.some((l) => l.includes("draining 1"))).toBe(true)))
    return closing
  })

describe("worker presence (TestClock, in-memory transport)", () => {
  it.scoped("subscribes and flushes before registering, then logs one ready line", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir() })
      const timeline = yield* h.bus.timeline
      const registerAt = timeline.indexOf(`pub ${Subjects.register}`)
      expect(registerAt).toBeGreaterThan(0)
      const before = timeline.slice(0, registerAt)
      expect(before).toContain(`sub ${Subjects.inference("test-worker")}`)
      expect(before).toContain(`sub ${Subjects.cancel("test-worker")}`)
      expect(before).toContain(`sub ${Subjects.probe("test-worker")}`)
      expect(before).toContain(`sub ${Subjects.announce}`)
      expect(before.at(-1)).toBe("flush")
      expect(h.logs.filter((l) => l.includes("registered"))).toEqual(["INFO worker test-worker registered"])
      const [registration] = yield* registrations(h)
      expect(registration).toMatchObject({
        workerId: "test-worker",
        port: 0,
        hardware: testHardware,
        capabilities: { maxConcurrent: 2, supportsStreaming: true, engine: "synthetic", probes: true, continuation: ["chat", "completions"] },
        skills: { availableModels: ["synthetic/demo"], modelPaths: { "synthetic/demo": "builtin:synthetic/demo" } },
        priority: 0,
        tags: []
      })
    })
  )

  it.scoped("registration carries the scanned skills, tags and priority from the config", () =>
    Effect.gen(function* () {
      const fixture = makeModelFixture(yield* tmpDir())
      const h = yield* startHarness({
        modelDir: fixture.modelDir,
        worker: (w) => ({ ...w, hfCacheDir: fixture.hfCacheDir, tags: ["fast", "studio"], priority: 5 })
      })
      const [registration] = yield* registrations(h)
      expect(registration?.skills.availableModels).toEqual(Object.keys(fixture.expected).sort())
      for (const [name, { path, size }] of Object.entries(fixture.expected)) {
        expect(registration?.skills.modelPaths[name]).toBe(path)
        expect(registration?.skills.modelSizes[name]).toBe(size)
      }
      expect(registration?.tags).toEqual(["fast", "studio"])
      expect(registration?.priority).toBe(5)
    })
  )

  it.scoped("heartbeats every heartbeat_interval_ms with request counters and tokens/s", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), heartbeatIntervalMs: 1_000 })
      const heartbeats = h.bus.sentOn(Subjects.heartbeat, WorkerHeartbeat)
      expect(yield* heartbeats).toEqual([])
      yield* TestClock.adjust("999 millis")
      expect(yield* heartbeats).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect((yield* heartbeats).length).toBe(1)
      yield* TestClock.adjust("3 seconds")
      const four = yield* heartbeats
      expect(four.length).toBe(4)
      expect(four.map((b) => b.timestamp)).toEqual([1000, 2000, 3000, 4000])
      const first = four[0]
      expect(first?.workerId).toBe("test-worker")
      expect(first?.metrics.requests).toEqual({ active: 0, total: 0, succeeded: 0, failed: 0 })
      expect(first?.metrics.cpuUsage).toBeGreaterThanOrEqual(0)
      expect(first?.metrics.cpuUsage).toBeLessThanOrEqual(1)
      expect(first?.metrics.memoryUsage).toBeGreaterThan(0)
      expect(first?.metrics.memoryUsage).toBeLessThanOrEqual(1)

      const request = inferenceRequest({ maxTokens: 30 })
      yield* send(h, request, replyTo(request))
      const done = yield* eventually(
        Effect.map(tokenMessages(h, request.requestId), (m) => {
          const last = m.at(-1)
          expect(last?.type).toBe("done")
          return m
        })
      )
      expect(tokensOf(done).length).toBe(30)
      yield* TestClock.adjust("1 second")
      const latest = (yield* heartbeats).at(-1)
      expect(latest?.metrics.requests).toEqual({ active: 0, total: 1, succeeded: 1, failed: 0 })
      expect(latest?.metrics.tokensPerSecond).toBe(30)
      yield* TestClock.adjust("1 second")
      expect((yield* heartbeats).at(-1)?.metrics.tokensPerSecond).toBe(0)
    })
  )

  it.scoped("registers again on controller.announce", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir() })
      expect((yield* registrations(h)).length).toBe(1)
      yield* h.bus.inject(Subjects.announce, { controllerId: "c-2", timestamp: 5 })
      yield* eventually(Effect.map(registrations(h), (r) => expect(r.length).toBe(2)))
      yield* h.bus.inject(Subjects.announce, { controllerId: "c-3" }) // invalid: ignored
      yield* h.bus.inject(Subjects.announce, { controllerId: "c-3", timestamp: 6 })
      yield* eventually(Effect.map(registrations(h), (r) => expect(r.length).toBe(3)))
      expect(h.logs.filter((l) => l.includes("registered")).length).toBe(1)
    })
  )

  it.scoped("a rescan (scheduled or on demand) that finds new models registers again", () =>
    Effect.gen(function* () {
      const modelDir = yield* tmpDir()
      const h = yield* startHarness({ modelDir, worker: (w) => ({ ...w, rescanIntervalMs: 10_000 }) })
      writeText(Path.join(modelDir, "org", "m1", "config.json"), "{}")
      writeBytes(Path.join(modelDir, "org", "m1", "model.safetensors"), 10)
      yield* TestClock.adjust("10 seconds")
      const second = yield* eventually(
        Effect.map(registrations(h), (r) => {
          expect(r.length).toBe(2)
          return r[1]
        })
      )
      expect(second?.skills.availableModels).toEqual(["org/m1"])
      expect(second?.skills.modelSizes["org/m1"]).toBe(12)
      // nothing changed: no registration
      yield* TestClock.adjust("10 seconds")
      yield* h.worker.rescan
      expect((yield* registrations(h)).length).toBe(2)
      writeText(Path.join(modelDir, "org", "m2", "config.json"), "{}")
      writeBytes(Path.join(modelDir, "org", "m2", "model.safetensors"), 1)
      const skills = yield* h.worker.rescan
      expect(skills.availableModels).toEqual(["org/m1", "org/m2"])
      yield* eventually(Effect.map(registrations(h), (r) => expect(r.at(-1)?.skills.availableModels).toEqual(["org/m1", "org/m2"])))
      expect((yield* h.worker.registration).skills.availableModels).toEqual(["org/m1", "org/m2"])
    })
  )

  it.scoped("graceful stop: refuses new requests as busy, lets running ones finish, then deregisters", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: paced(10) })
      const request = inferenceRequest({ maxTokens: 5 })
      yield* startRequest(h, request)
      const closing = yield* beginDrainOfOne(h)
      const late = inferenceRequest()
      yield* send(h, late, replyTo(late))
      yield* eventually(
        Effect.map(repliesTo(h, replyTo(late)), (r) => expect(r).toEqual([{ accepted: false, reason: "busy", message: expect.stringContaining("shutting down"), active: 1 }]))
      )
      expect(yield* h.bus.sentOn(Subjects.deregister, WorkerDeregistration)).toEqual([])
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
      const sent = yield* h.bus.published
      const doneAt = sent.findIndex(
        (s) => s.subject === Subjects.response(request.requestId) && Schema.decodeUnknownSync(TokenMessage)(JSON.parse(s.payload)).type === "done"
      )
      const deregisterAt = sent.findIndex((s) => s.subject === Subjects.deregister)
      expect(doneAt).toBeGreaterThan(0)
      expect(deregisterAt).toBeGreaterThan(doneAt)
      expect(Schema.decodeUnknownSync(WorkerDeregistration)(JSON.parse(sent[deregisterAt]?.payload ?? "null"))).toMatchObject({
        workerId: "test-worker"
      })
      expect(tokensOf(yield* tokenMessages(h, request.requestId))).toEqual(planSynthetic(request).tokens)
    })
  )

  it.scoped("graceful stop with a request running past drain_timeout_ms stops it with worker_shutdown", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({
        modelDir: yield* tmpDir(),
        engine: paced(10),
        worker: (w) => ({ ...w, drainTimeoutMs: 2_000 })
      })
      const request = inferenceRequest({ maxTokens: 1_000 })
      yield* startRequest(h, request)
      const closing = yield* beginDrainOfOne(h)
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(closing)
      const messages = yield* tokenMessages(h, request.requestId)
      expect(messages.at(-1)).toMatchObject({ type: "error", code: "worker_shutdown" })
      expect(tokensOf(messages).length).toBeGreaterThan(10)
      expect(tokensOf(messages)).toEqual(planSynthetic(request).tokens.slice(0, tokensOf(messages).length))
      expect((yield* h.bus.sentOn(Subjects.deregister, WorkerDeregistration)).length).toBe(1)
      expect(yield* h.worker.stats).toMatchObject({ total: 1, failed: 1, succeeded: 0, active: 0 })
    })
  )
})

describe("inference handling (TestClock, in-memory transport)", () => {
  it.scoped("acks, streams ordered tokens and ends with one done carrying usage and latency", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: paced(100) })
      const request = inferenceRequest({ maxTokens: 10 })
      yield* send(h, request, replyTo(request))
      yield* eventually(Effect.map(repliesTo(h, replyTo(request)), (r) => expect(r).toEqual([{ accepted: true, workerId: "test-worker", active: 1 }])))
      yield* TestClock.adjust("1 second")
      const messages = yield* untilEnded(h, request.requestId)
      const plan = planSynthetic(request)
      const batches = batchesOf(messages)
      expect(batches.length).toBeGreaterThan(0)
      expect(batches.map((b) => b.index)).toEqual(contiguousIndexes(batches))
      expect(batches.every((b) => b.requestId === request.requestId)).toBe(true)
      expect(tokensOf(messages)).toEqual(plan.tokens)
      expect(messages.filter((m) => m.type !== "tokens").length).toBe(1)
      expect(messages.at(-1)).toEqual({
        type: "done",
        requestId: request.requestId,
        finishReason: "length",
        usage: { promptTokens: 3, completionTokens: 10 },
        latencyMs: 90,
        systemFingerprint: "fp_synthetic"
      })
      expect(yield* h.worker.stats).toMatchObject({ total: 1, succeeded: 1, active: 0, tokens: 10 })
    })
  )

  it.scoped("refuses: busy at max_concurrent, model_not_found, duplicate request id", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: paced(10) })
      const requests = [inferenceRequest(), inferenceRequest(), inferenceRequest()]
      for (const r of requests) yield* send(h, r, replyTo(r))
      const replies = yield* eventually(
        Effect.map(Effect.forEach(requests, (r) => repliesTo(h, replyTo(r))), (all) => {
          expect(all.every((r) => r.length === 1)).toBe(true)
          return all.map((r) => r[0])
        })
      )
      expect(replies.filter((r) => r?.accepted === true).length).toBe(2)
      expect(replies.filter((r) => r?.accepted === false && r.reason === "busy").length).toBe(1)

      const duplicate = { ...inferenceRequest(), requestId: requests[0]?.requestId }
      yield* send(h, duplicate, "reply.duplicate")
      yield* eventually(
        Effect.map(repliesTo(h, "reply.duplicate"), (r) => expect(r[0]).toMatchObject({ accepted: false, reason: "invalid_request" }))
      )
      const unknown = inferenceRequest({ model: "no/such-model" })
      yield* send(h, unknown, replyTo(unknown))
      yield* eventually(
        Effect.map(repliesTo(h, replyTo(unknown)), (r) =>
          expect(r[0]).toMatchObject({ accepted: false, reason: "model_not_found", message: expect.stringContaining("synthetic/demo") })
        )
      )
      expect((yield* h.worker.stats).total).toBe(2)
    })
  )

  it.scoped("a cancel stops the request: no more tokens, no done; counted in total only", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: paced(10) })
      const request = inferenceRequest({ maxTokens: 100 })
      yield* startRequest(h, request)
      yield* TestClock.adjust("250 millis")
      yield* eventually(Effect.map(tokenMessages(h, request.requestId), (m) => expect(m.length).toBe(3)))
      yield* h.bus.inject(Subjects.cancel("test-worker"), { requestId: request.requestId })
      yield* untilRunning(h, 0)
      yield* TestClock.adjust("20 seconds")
      const afterCancel = yield* tokenMessages(h, request.requestId)
      expect(afterCancel.map((m) => m.type)).toEqual(["tokens", "tokens", "tokens"])
      expect(tokensOf(afterCancel)).toEqual(planSynthetic(request).tokens.slice(0, 3))
      expect(yield* h.worker.stats).toMatchObject({ total: 1, succeeded: 0, failed: 0, cancelled: 1, active: 0 })
      // a cancel for something not running is harmless
      yield* h.bus.inject(Subjects.cancel("test-worker"), { requestId: "nothing-here" })
      const next = inferenceRequest({ maxTokens: 2 })
      yield* send(h, next, replyTo(next))
      yield* TestClock.adjust("1 second")
      yield* untilEnded(h, next.requestId)
    })
  )

  it.scoped("worker.request_timeout_ms ends a request with an error of code timeout", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({
        modelDir: yield* tmpDir(),
        engine: paced(10),
        worker: (w) => ({ ...w, requestTimeoutMs: 1_000 })
      })
      const request = inferenceRequest({ maxTokens: 100 })
      yield* startRequest(h, request)
      // at the limit, not past it: still running
      yield* TestClock.adjust("1 second")
      expect(yield* h.worker.running).toBe(1)
      expect((yield* tokenMessages(h, request.requestId)).map((m) => m.type)).not.toContain("error")
      // the timeout check runs every request_timeout_ms / 20 (here 50 ms): the first tick past the limit stops it
      yield* TestClock.adjust("50 millis")
      const messages = yield* untilEnded(h, request.requestId, "error")
      expect(messages.at(-1)).toMatchObject({ type: "error", code: "timeout", message: expect.stringContaining("1000 ms") })
      expect(messages.filter((m) => m.type === "done")).toEqual([])
      expect(messages.filter((m) => m.type === "error").length).toBe(1)
      expect(tokensOf(messages)).toEqual(planSynthetic(request).tokens.slice(0, 11))
      expect(yield* h.worker.stats).toMatchObject({ total: 1, failed: 1, active: 0 })
      // nothing after the error
      yield* TestClock.adjust("1 second")
      expect((yield* tokenMessages(h, request.requestId)).length).toBe(messages.length)
    })
  )

  it.scoped("invalid bodies: invalid_request when there is a reply subject, dropped otherwise; serving goes on", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir() })
      yield* send(h, { nonsense: true })
      yield* send(h, { requestId: "x", model: "synthetic/demo" }, "reply.bad")
      yield* send(h, JSON.stringify("just a string"), "reply.string")
      yield* send(h, { ...inferenceRequest(), maxTokens: -1 }, "reply.negative")
      for (const subject of ["reply.bad", "reply.string", "reply.negative"]) {
        yield* eventually(
          Effect.map(repliesTo(h, subject), (r) =>
            expect(r).toEqual([{ accepted: false, reason: "invalid_request", message: expect.stringContaining("invalid inference request") }])
          )
        )
      }
      // logged, at most one line a second: the first one (without a reply subject) only
      const warnings = h.logs.filter((l) => l.startsWith("WARN") && l.includes("invalid inference request"))
      expect(warnings.length).toBe(1)
      expect(warnings[0]).toContain("no reply subject")
      expect(yield* h.worker.stats).toMatchObject({ total: 0, active: 0 })
      const ok = inferenceRequest({ maxTokens: 3 })
      yield* send(h, ok, replyTo(ok))
      yield* untilEnded(h, ok.requestId)
      // a valid request without a reply subject still runs
      const silent = inferenceRequest({ maxTokens: 2 })
      yield* send(h, silent)
      yield* untilEnded(h, silent.requestId)
    })
  )

  it.scoped("a body that is not JSON or not an inference request gets invalid_request at once when it has a reply subject", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir() })
      const bodies: ReadonlyArray<string> = [
        "{ not json",
        "%%%",
        "",
        "[1, 2]",
        "null",
        JSON.stringify({ ...inferenceRequest(), model: "" }),
        JSON.stringify({ ...inferenceRequest(), maxTokens: 1.5 })
      ]
      for (const [i, body] of bodies.entries()) yield* send(h, body, `reply.raw-${i}`)
      h.nats.send(Subjects.inference(h.workerId), new Uint8Array([0xff, 0x00, 0x01]), "reply.bytes")
      // answered synchronously, while the message is delivered: no waiting
      for (const subject of [...bodies.map((_, i) => `reply.raw-${i}`), "reply.bytes"]) {
        expect(yield* repliesTo(h, subject)).toEqual([
          { accepted: false, reason: "invalid_request", message: expect.stringContaining("invalid inference request") }
        ])
      }
      expect((yield* h.bus.published).filter((m) => m.subject.startsWith("response."))).toEqual([])
      expect(yield* h.worker.stats).toMatchObject({ total: 0, active: 0 })
      expect(yield* h.worker.running).toBe(0)
    })
  )

  it.scoped("unpaced, maxTokens 100: one tokens message per engine group of 32 (4 messages), then done", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir() })
      const request = inferenceRequest({ maxTokens: 100, messages: [{ role: "user", content: "tell me a long story" }] })
      const plan = planSynthetic(request)
      expect(plan.tokens.length).toBe(100)
      yield* send(h, request, replyTo(request))
      const messages = yield* untilEnded(h, request.requestId)
      expect(messages.map((m) => m.type)).toEqual(["tokens", "tokens", "tokens", "tokens", "done"])
      expect(batchesOf(messages).map((b) => [b.index, b.tokens.length])).toEqual([
        [0, 32],
        [32, 32],
        [64, 32],
        [96, 4]
      ])
      expect(tokensOf(messages)).toEqual(plan.tokens)
      expect(tokensOf(messages).join("")).toBe(plan.tokens.join(""))
      expect(messages.at(-1)).toMatchObject({ finishReason: "length", usage: { completionTokens: 100 } })
      expect(yield* h.worker.stats).toMatchObject({ succeeded: 1, tokens: 100 })
    })
  )

  it.scoped("the slot is free when done is published: at max_concurrent 1 a request sent on seeing done is accepted", () =>
    Effect.gen(function* () {
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: paced(10), worker: (w) => ({ ...w, maxConcurrent: 1 }) })
      const first = inferenceRequest({ maxTokens: 3 })
      const probe = inferenceRequest({ maxTokens: 3 })
      const next = inferenceRequest({ maxTokens: 3 })
      const encoder = new TextEncoder()
      const decoder = new TextDecoder()
      let activeAtDone: number | undefined
      // Plays a controller that dispatches the next request the moment it reads `done` (the scripted
      // bus delivers synchronously, inside the worker's publish).
      const listener = h.nats.listen(Subjects.response(first.requestId), (m) => {
        const message = Schema.decodeUnknownSync(TokenMessage)(JSON.parse(decoder.decode(m.data)))
        if (message.type !== "done") return
        activeAtDone = Effect.runSync(h.worker.stats).active
        h.nats.send(
          Subjects.inference(h.workerId),
          encoder.encode(JSON.stringify(Schema.encodeSync(InferenceRequest)(next))),
          replyTo(next)
        )
      })
      yield* Effect.addFinalizer(() => Effect.sync(listener.close))
      yield* send(h, first, replyTo(first))
      yield* eventually(Effect.map(repliesTo(h, replyTo(first)), (r) => expect(r).toEqual([{ accepted: true, workerId: "test-worker", active: 1 }])))
      // while it runs, the one slot is taken
      yield* send(h, probe, replyTo(probe))
      yield* eventually(Effect.map(repliesTo(h, replyTo(probe)), (r) => expect(r).toMatchObject([{ accepted: false, reason: "busy" }])))
      yield* TestClock.adjust("200 millis")
      yield* untilEnded(h, first.requestId)
      expect(activeAtDone).toBe(0)
      expect(yield* repliesTo(h, replyTo(next))).toEqual([{ accepted: true, workerId: "test-worker", active: 1 }])
      yield* TestClock.adjust("200 millis")
      yield* untilEnded(h, next.requestId)
      expect(yield* h.worker.stats).toMatchObject({ total: 2, succeeded: 2, active: 0 })
    })
  )

  it.scoped("a paced engine waking late: the overdue tokens go out as one tokens message", () =>
    Effect.gen(function* () {
      // every timer of the engine fires 250 ms late; tokens are due every 100 ms
      const late = Layer.effect(
        InferenceEngine,
        Effect.map(lateClock(250), (clock) => {
          const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 0 })
          return {
            type: engine.type,
            features: engine.features,
            generate: (request, path, emit, emitToolCalls) => engine.generate(request, path, emit, emitToolCalls).pipe(Effect.withClock(clock))
          }
        })
      )
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: late })
      const request = inferenceRequest({ maxTokens: 4 })
      yield* send(h, request, replyTo(request))
      yield* eventually(Effect.map(tokenMessages(h, request.requestId), (m) => expect(m.length).toBe(1)))
      yield* TestClock.adjust("349 millis")
      expect((yield* tokenMessages(h, request.requestId)).length).toBe(1)
      yield* TestClock.adjust("1 millis")
      const messages = yield* untilEnded(h, request.requestId)
      const plan = planSynthetic(request)
      expect(messages).toEqual([
        { type: "tokens", requestId: request.requestId, index: 0, tokens: plan.tokens.slice(0, 1) },
        { type: "tokens", requestId: request.requestId, index: 1, tokens: plan.tokens.slice(1, 4) },
        {
          type: "done",
          requestId: request.requestId,
          finishReason: "length",
          usage: { promptTokens: 3, completionTokens: 4 },
          latencyMs: 350,
          systemFingerprint: "fp_synthetic"
        }
      ])
    })
  )

  it.scoped("another engine with no model folder registers its type and no skills", () =>
    Effect.gen(function* () {
      const other = Layer.succeed(InferenceEngine, { type: "other", features: [], generate: () => Effect.never })
      const h = yield* startHarness({ modelDir: yield* tmpDir(), engine: other, worker: (w) => ({ ...w, engine: { ...w.engine, type: "openai" } }) })
      const [registration] = yield* registrations(h)
      expect(registration?.capabilities).toEqual({ maxConcurrent: 2, supportsStreaming: true, engine: "other", probes: true, features: [] })
      expect(registration?.skills.availableModels).toEqual([])
      yield* h.worker.register
      expect((yield* registrations(h)).length).toBe(2)
    })
  )

  it.scoped("engine errors after some tokens, defects, empty batches and the engine's own finish", () =>
    Effect.gen(function* () {
      const fixture = makeModelFixture(yield* tmpDir())
      const engine = Layer.succeed(InferenceEngine, {
        type: "scripted",
        features: [],
        generate: (request, _path, emit) => {
          switch (request.messages?.[0]?.content) {
            case "fail":
              return Effect.sync(() => emit(["a", "b"])).pipe(
                Effect.zipRight(Effect.fail(new EngineError({ code: "upstream_error", message: "upstream answered 500: boom" })))
              )
            case "die":
              return Effect.die(new Error("engine bug"))
            default:
              return Effect.sync(() => {
                emit([])
                emit(["y"])
                emit([])
                emit(["z", "w"])
                return finish("stop", { promptTokens: 1, completionTokens: 3 })
              })
          }
        }
      })
      const h = yield* startHarness({ modelDir: fixture.modelDir, engine })
      const ask = (content: string) => {
        const r = inferenceRequest({ model: "tiny", messages: [{ role: "user", content }] })
        return send(h, r, replyTo(r)).pipe(
          Effect.zipRight(
            eventually(
              Effect.map(tokenMessages(h, r.requestId), (m) => {
                expect(["done", "error"]).toContain(m.at(-1)?.type)
                return m
              })
            )
          )
        )
      }
      const failed = yield* ask("fail")
      expect(failed.map((m) => m.type)).toEqual(["tokens", "error"])
      expect(failed[0]).toMatchObject({ type: "tokens", index: 0, tokens: ["a", "b"] })
      expect(failed.at(-1)).toMatchObject({ code: "upstream_error", message: "upstream answered 500: boom" })
      const died = yield* ask("die")
      expect(died).toEqual([expect.objectContaining({ type: "error", code: "internal_error" })])
      const ok = yield* ask("ok")
      // empty batches are not sent; the index counts the tokens before each batch
      expect(batchesOf(ok).map((b) => [b.index, b.tokens])).toEqual([
        [0, ["y"]],
        [1, ["z", "w"]]
      ])
      expect(ok.at(-1)).toMatchObject({
        type: "done",
        finishReason: "stop",
        usage: { promptTokens: 1, completionTokens: 3 }
      })
      expect(yield* h.worker.stats).toMatchObject({ total: 3, succeeded: 1, failed: 2, active: 0, tokens: 5 })
    })
  )
})

/** What `buildRegistration` takes, for one worker "w"; each test changes what it is about. */
const registrationInput = {
  workerId: Schema.decodeSync(WorkerRegistration.fields.workerId)("w"),
  hostname: "h",
  ip: "1.2.3.4",
  hardware: testHardware,
  maxConcurrent: 1,
  engine: "synthetic",
  skills: { availableModels: ["a"], modelPaths: {}, modelSizes: {}, totalModelSize: 0, lastScanned: 1 },
  priority: 0,
  tags: [],
  timestamp: 2
}

describe("registration helpers", () => {
  it("buildRegistration and primaryIPv4", () => {
    expect(
      primaryIPv4({
        lo: [{ address: "127.0.0.1", netmask: "255.0.0.0", family: "IPv4", mac: "00", internal: true, cidr: null }],
        en0: [
          { address: "fe80::1", netmask: "ffff::", family: "IPv6", mac: "00", internal: false, cidr: null, scopeid: 1 },
          { address: "192.168.1.20", netmask: "255.255.255.0", family: "IPv4", mac: "00", internal: false, cidr: null }
        ]
      })
    ).toBe("192.168.1.20")
    expect(primaryIPv4({})).toBe("127.0.0.1")
    const registration = buildRegistration({
      ...registrationInput,
      maxConcurrent: 3,
      skills: { ...registrationInput.skills, availableModels: [] },
      priority: 1,
      tags: ["t"]
    })
    expect(Schema.decodeUnknownSync(WorkerRegistration)(registration)).toEqual(registration)
    expect(registration.capabilities).not.toHaveProperty("features")
  })

  it("buildRegistration says what the engine honours, per model only for the models served", () => {
    const registration = buildRegistration({
      ...registrationInput,
      maxConcurrent: 3,
      engine: "openai",
      features: ["tools", "seed"],
      modelFeatures: { "a/vision": ["multimodal"], "b/gone": ["tools"] },
      skills: { ...registrationInput.skills, availableModels: ["a/vision", "c/plain"] }
    })
    expect(registration.capabilities).toEqual({
      maxConcurrent: 3,
      supportsStreaming: true,
      engine: "openai",
      probes: true,
      features: ["tools", "seed"],
      modelFeatures: { "a/vision": ["multimodal"] }
    })
    const none = buildRegistration({ ...registrationInput, modelFeatures: { "b/gone": ["tools"] } })
    expect(none.capabilities).not.toHaveProperty("modelFeatures")
  })
})

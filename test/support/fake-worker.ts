import { Clock, Context, Effect, Fiber, Layer, Ref, Schedule, Schema, type Scope, Stream } from "effect"
import { WorkerId } from "../../src/domain/ids.js"
import {
  CancelRequest,
  type InferenceReply,
  InferenceReply as InferenceReplySchema,
  InferenceRequest,
  TokenMessage
} from "../../src/domain/inference.js"
import { Subjects } from "../../src/domain/subjects.js"
import { WorkerHeartbeat, WorkerRegistration } from "../../src/domain/worker.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { layer as natsLayer } from "../../src/nats/nats-transport-live.js"
import { makeProbeResponder } from "../../src/worker/probe-responder.js"
import { registration as fixtureRegistration } from "../controller/support/fixtures.js"
import { eventually } from "./eventually.js"

/** What a fake worker does with one accepted request: publish token messages as it likes. */
export type Script = (request: InferenceRequest, send: (message: TokenMessage) => Effect.Effect<void>) => Effect.Effect<void>

export interface FakeWorkerSpec {
  readonly id: string
  readonly models: ReadonlyArray<string>
  readonly maxConcurrent?: number
  /** The reply to each inference request; default: accept. */
  readonly reply?: (request: InferenceRequest) => InferenceReply
  /** Registers `capabilities.probes` and answers `worker.{id}.probe` as a real worker does (issue 13). */
  readonly probes?: boolean
  /** Registers `capabilities.continuation` (issue 13); the script must honour `request.continuation`. */
  readonly continuation?: ReadonlyArray<string>
}

export interface FakeWorkerService {
  readonly workerId: string
  readonly models: ReadonlyArray<string>
  /** Every inference request received, in arrival order. */
  readonly requests: Effect.Effect<ReadonlyArray<InferenceRequest>>
  /** Request ids cancelled by the controller, in arrival order, with the time they arrived. */
  readonly cancels: Effect.Effect<ReadonlyArray<{ readonly requestId: string; readonly at: number }>>
  /** Waits (up to 5 s) until at least `count` requests arrived; returns them all. */
  readonly awaitRequests: (count: number) => Effect.Effect<ReadonlyArray<InferenceRequest>>
  /** Waits (up to 5 s) until at least `count` cancels arrived; returns their request ids. */
  readonly awaitCancels: (count: number) => Effect.Effect<ReadonlyArray<string>>
}

/** A script that streams `tokens` (one message each, `gapMs` apart) then `done` with matching usage. */
export const streamTokens =
  (tokens: ReadonlyArray<string>, gapMs = 0): Script =>
  (request, send) =>
    Effect.gen(function* () {
      for (const [index, token] of tokens.entries()) {
        if (gapMs > 0) yield* Effect.sleep(gapMs)
        yield* send({ type: "tokens", requestId: request.requestId, index, tokens: [token] })
      }
      yield* send({
        type: "done",
        requestId: request.requestId,
        finishReason: "stop",
        usage: { promptTokens: 1, completionTokens: tokens.length },
        latencyMs: 1
      })
    })

/**
 * The front doors' fake engine: `maxTokens` tokens `t0 `, `t1 `, … one per `delayMs`, then `done`
 * (`length`). The prompt `"fail"` makes it send one token and then an `error` (`engine_error`).
 * A continued request (issue 13) goes on with the text: `tN `, `tN+1 `, … after N tokens sent.
 */
export const countingTokens =
  (delayMs = 5): Script =>
  (request, send) =>
    Effect.gen(function* () {
      const startedAt = yield* Clock.currentTimeMillis
      const count = request.prompt === "fail" ? 1 : (request.maxTokens ?? 16)
      const before = request.continuation?.completionTokens ?? 0
      for (let index = 0; index < count; index++) {
        yield* Effect.sleep(delayMs)
        yield* send({ type: "tokens", requestId: request.requestId, index, tokens: [`t${before + index} `] })
      }
      yield* Effect.sleep(delayMs)
      if (request.prompt === "fail") {
        return yield* send({ type: "error", requestId: request.requestId, code: "engine_error", message: "the fake engine failed" })
      }
      const now = yield* Clock.currentTimeMillis
      yield* send({
        type: "done",
        requestId: request.requestId,
        finishReason: "length",
        usage: { promptTokens: 3, completionTokens: count },
        latencyMs: now - startedAt
      })
    })

/**
 * A scripted worker on its own NATS connection, for tests of the controller over a real
 * nats-server: registers (again on every `controller.announce`), heartbeats every 500 ms, answers
 * each inference request with `spec.reply` and runs `script` for the accepted ones (a cancel
 * interrupts it), and records requests and cancels.
 */
export const startFakeWorker = (
  natsUrl: string,
  spec: FakeWorkerSpec,
  script: Script = countingTokens()
): Effect.Effect<FakeWorkerService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const context = yield* Layer.build(natsLayer({ url: natsUrl, name: `fake worker ${spec.id}` }))
    const nats = yield* Effect.provide(NatsTransport, context)
    const workerId = WorkerId.make(spec.id)
    const cancels = yield* Ref.make<ReadonlyArray<{ requestId: string; at: number }>>([])
    const requests = yield* Ref.make<ReadonlyArray<InferenceRequest>>([])
    const running = new Map<string, Effect.Effect<void>>()

    const inference = yield* nats.subscribe(Subjects.inference(workerId), InferenceRequest)
    const cancel = yield* nats.subscribe(Subjects.cancel(workerId), CancelRequest)
    yield* Stream.runForEach(cancel, (m) =>
      Effect.gen(function* () {
        const at = yield* Clock.currentTimeMillis
        yield* Ref.update(cancels, (c) => [...c, { requestId: m.data.requestId, at }])
        yield* running.get(m.data.requestId) ?? Effect.void
      })
    ).pipe(Effect.forkScoped)
    yield* Stream.runForEach(inference, (m) =>
      Effect.gen(function* () {
        yield* Ref.update(requests, (r) => [...r, m.data])
        const reply = spec.reply?.(m.data) ?? { accepted: true as const, workerId }
        if (m.replyTo !== undefined) yield* nats.publish(m.replyTo, InferenceReplySchema, reply)
        if (reply.accepted) {
          const send = (message: TokenMessage) => nats.publish(Subjects.response(m.data.requestId), TokenMessage, message)
          const fiber = yield* Effect.forkScoped(
            script(m.data, send).pipe(Effect.ensuring(Effect.sync(() => running.delete(m.data.requestId))))
          )
          running.set(m.data.requestId, Fiber.interrupt(fiber).pipe(Effect.asVoid))
        }
      })
    ).pipe(Effect.forkScoped)
    if (spec.probes === true) {
      yield* makeProbeResponder({ workerId, active: () => running.size }).pipe(Effect.provideService(NatsTransport, nats))
    }
    yield* nats.flush

    const registration: WorkerRegistration = {
      ...fixtureRegistration({ id: spec.id, models: spec.models, maxConcurrent: spec.maxConcurrent ?? 64 }),
      capabilities: {
        maxConcurrent: spec.maxConcurrent ?? 64,
        supportsStreaming: true,
        engine: "fake",
        ...(spec.probes === true ? { probes: true } : {}),
        ...(spec.continuation !== undefined ? { continuation: [...spec.continuation] } : {})
      }
    }
    yield* nats.publish(Subjects.register, WorkerRegistration, registration)
    yield* Stream.runForEach(yield* nats.subscribe(Subjects.announce, Schema.Unknown), () =>
      nats.publish(Subjects.register, WorkerRegistration, registration)
    ).pipe(Effect.forkScoped)
    yield* Clock.currentTimeMillis.pipe(
      Effect.flatMap((timestamp) =>
        nats.publish(Subjects.heartbeat, WorkerHeartbeat, {
          workerId,
          timestamp,
          metrics: { cpuUsage: 0, memoryUsage: 0, requests: { active: running.size, total: 0, succeeded: 0, failed: 0 } }
        })
      ),
      Effect.repeat({ schedule: Schedule.spaced("500 millis") }),
      Effect.forkScoped
    )
    yield* nats.flush

    const atLeast = <A>(items: Effect.Effect<ReadonlyArray<A>>, count: number) =>
      eventually(Effect.filterOrFail(items, (all) => all.length >= count, () => `fewer than ${count}`)).pipe(Effect.orDie)
    return {
      workerId: spec.id,
      models: spec.models,
      requests: Ref.get(requests),
      cancels: Ref.get(cancels),
      awaitRequests: (count) => atLeast(Ref.get(requests), count),
      awaitCancels: (count) => Effect.map(atLeast(Ref.get(cancels), count), (all) => all.map((c) => c.requestId))
    } satisfies FakeWorkerService
  })

/** The fake worker of a test layer (`FakeWorkerLive`). */
export class FakeWorker extends Context.Tag("test/FakeWorker")<FakeWorker, FakeWorkerService>() {}

export const FakeWorkerLive = (natsUrl: string, spec: FakeWorkerSpec & { readonly tokenDelayMs?: number }): Layer.Layer<FakeWorker> =>
  Layer.scoped(FakeWorker, startFakeWorker(natsUrl, spec, countingTokens(spec.tokenDelayMs)))

import { Clock, Effect, Layer, Ref, Schedule, Schema, type Scope, Stream } from "effect"
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

/** What a scripted worker does with one accepted request: publish token messages as it likes. */
export type Script = (
  request: InferenceRequest,
  send: (message: TokenMessage) => Effect.Effect<void>
) => Effect.Effect<void>

export interface FakeWorker {
  readonly workerId: string
  /** Request ids cancelled by the controller, in arrival order, with the time they arrived. */
  readonly cancels: Effect.Effect<ReadonlyArray<{ readonly requestId: string; readonly at: number }>>
  readonly requests: Effect.Effect<ReadonlyArray<InferenceRequest>>
}

/** A scripted worker on its own NATS connection: registers, heartbeats, runs `script` per request. */
export const startFakeWorker = (
  natsUrl: string,
  spec: { readonly id: string; readonly models: ReadonlyArray<string>; readonly reply?: (r: InferenceRequest) => InferenceReply },
  script: Script
): Effect.Effect<FakeWorker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const context = yield* Layer.build(natsLayer({ url: natsUrl, name: `fake worker ${spec.id}` }))
    const nats = yield* Effect.provide(NatsTransport, context)
    const workerId = WorkerId.make(spec.id)
    const cancels = yield* Ref.make<ReadonlyArray<{ requestId: string; at: number }>>([])
    const requests = yield* Ref.make<ReadonlyArray<InferenceRequest>>([])

    const inference = yield* nats.subscribe(Subjects.inference(workerId), InferenceRequest)
    const cancel = yield* nats.subscribe(Subjects.cancel(workerId), CancelRequest)
    yield* Stream.runForEach(cancel, (m) =>
      Clock.currentTimeMillis.pipe(Effect.flatMap((at) => Ref.update(cancels, (c) => [...c, { requestId: m.data.requestId, at }])))
    ).pipe(Effect.forkScoped)
    yield* Stream.runForEach(inference, (m) =>
      Effect.gen(function* () {
        yield* Ref.update(requests, (r) => [...r, m.data])
        const reply = spec.reply?.(m.data) ?? { accepted: true as const, workerId }
        if (m.replyTo !== undefined) yield* nats.respond(m.replyTo, InferenceReplySchema, reply)
        if (reply.accepted) {
          const send = (message: TokenMessage) => nats.publish(Subjects.response(m.data.requestId), TokenMessage, message)
          yield* Effect.forkScoped(script(m.data, send))
        }
      })
    ).pipe(Effect.forkScoped)
    yield* nats.flush

    const registration: WorkerRegistration = {
      workerId,
      hostname: `${spec.id}.test`,
      ip: "127.0.0.1",
      port: 0,
      hardware: { platform: "linux", arch: "x64", cpuCores: 2, gpuMemoryGB: 64, totalMemoryGB: 64 },
      capabilities: { maxConcurrent: 64, supportsStreaming: true, engine: "fake" },
      skills: {
        availableModels: spec.models,
        modelPaths: Object.fromEntries(spec.models.map((m) => [m, `/fake/${m}`])),
        modelSizes: {},
        totalModelSize: 0,
        lastScanned: 0
      },
      timestamp: 0
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
          metrics: { cpuUsage: 0, memoryUsage: 0, requests: { active: 0, total: 0, succeeded: 0, failed: 0 } }
        })
      ),
      Effect.repeat({ schedule: Schedule.spaced("500 millis") }),
      Effect.forkScoped
    )
    yield* nats.flush
    return { workerId: spec.id, cancels: Ref.get(cancels), requests: Ref.get(requests) }
  })

/** A script that streams `tokens` then `done` with matching usage. */
export const streamTokens =
  (tokens: ReadonlyArray<string>, gapMs = 0): Script =>
  (request, send) =>
    Effect.gen(function* () {
      for (const [index, token] of tokens.entries()) {
        if (gapMs > 0) yield* Effect.sleep(gapMs)
        yield* send({ type: "token", requestId: request.requestId, index, token })
      }
      yield* send({
        type: "done",
        requestId: request.requestId,
        finishReason: "stop",
        usage: { promptTokens: 1, completionTokens: tokens.length },
        latencyMs: 1
      })
    })

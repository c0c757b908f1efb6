import { Clock, Context, Effect, FiberMap, Layer, Option, Schedule, Stream, SubscriptionRef } from "effect"
import { RequestId, WorkerId } from "../../../src/domain/ids.js"
import {
  CancelRequest,
  InferenceReply,
  InferenceRequest,
  TokenMessage
} from "../../../src/domain/inference.js"
import { Subjects } from "../../../src/domain/subjects.js"
import { ControllerAnnounce, WorkerRegistration } from "../../../src/domain/worker.js"
import { NatsTransport } from "../../../src/nats/nats-transport.js"
import { registration } from "../../controller/support/fixtures.js"

/**
 * A tiny worker for end-to-end tests of the front doors: registers on `worker.register` (again on
 * every `controller.announce`), acks every `worker.{id}.inference` and streams `maxTokens` tokens
 * `t0 `, `t1 `, … to `response.{requestId}`, one per `tokenDelayMs`, then `done`. The prompt
 * `"fail"` makes it send one token and then an `error` (`engine_error`). It records the requests
 * and the cancels it received.
 */
export interface FakeWorkerService {
  readonly workerId: string
  readonly models: ReadonlyArray<string>
  readonly requests: Effect.Effect<ReadonlyArray<InferenceRequest>>
  readonly cancels: Effect.Effect<ReadonlyArray<string>>
  /** Waits (up to 5 s) until at least `count` cancels arrived; returns them all. */
  readonly awaitCancels: (count: number) => Effect.Effect<ReadonlyArray<string>>
  /** Waits (up to 5 s) until at least `count` requests arrived; returns them all. */
  readonly awaitRequests: (count: number) => Effect.Effect<ReadonlyArray<InferenceRequest>>
}

export class FakeWorker extends Context.Tag("test/FakeWorker")<FakeWorker, FakeWorkerService>() {}

export interface FakeWorkerOptions {
  readonly workerId: string
  readonly models: ReadonlyArray<string>
  readonly tokenDelayMs?: number
}

const awaitAtLeast = <A>(ref: SubscriptionRef.SubscriptionRef<ReadonlyArray<A>>, count: number, what: string) =>
  ref.changes.pipe(
    Stream.filter((items) => items.length >= count),
    Stream.runHead,
    Effect.map(Option.getOrThrow),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`fake worker: fewer than ${count} ${what}`) }),
    Effect.orDie
  )

export const FakeWorkerLive = (options: FakeWorkerOptions): Layer.Layer<FakeWorker, never, NatsTransport> =>
  Layer.scoped(
    FakeWorker,
    Effect.gen(function* () {
      const nats = yield* NatsTransport
      const workerId = WorkerId.make(options.workerId)
      const delay = options.tokenDelayMs ?? 5
      const requests = yield* SubscriptionRef.make<ReadonlyArray<InferenceRequest>>([])
      const cancels = yield* SubscriptionRef.make<ReadonlyArray<string>>([])
      const running = yield* FiberMap.make<string>()

      const register = Effect.gen(function* () {
        const timestamp = yield* Clock.currentTimeMillis
        yield* nats.publish(Subjects.register, WorkerRegistration, {
          ...registration({ id: options.workerId, models: options.models, maxConcurrent: 16 }),
          timestamp
        })
      })

      const generate = (request: InferenceRequest) =>
        Effect.gen(function* () {
          const subject = Subjects.response(request.requestId)
          const startedAt = yield* Clock.currentTimeMillis
          const count = request.prompt === "fail" ? 1 : request.maxTokens
          for (let index = 0; index < count; index++) {
            yield* Effect.sleep(delay)
            yield* nats.publish(subject, TokenMessage, { type: "token", requestId: request.requestId, index, token: `t${index} ` })
          }
          yield* Effect.sleep(delay)
          if (request.prompt === "fail") {
            return yield* nats.publish(subject, TokenMessage, {
              type: "error",
              requestId: request.requestId,
              code: "engine_error",
              message: "the fake engine failed"
            })
          }
          const now = yield* Clock.currentTimeMillis
          yield* nats.publish(subject, TokenMessage, {
            type: "done",
            requestId: request.requestId,
            finishReason: "length",
            usage: { promptTokens: 3, completionTokens: count },
            latencyMs: now - startedAt
          })
        })

      const inference = yield* nats.subscribe(Subjects.inference(workerId), InferenceRequest)
      const cancel = yield* nats.subscribe(Subjects.cancel(workerId), CancelRequest)
      const announce = yield* nats.subscribe(Subjects.announce, ControllerAnnounce)

      yield* inference.pipe(
        Stream.runForEach(({ data, replyTo }) =>
          Effect.gen(function* () {
            yield* SubscriptionRef.update(requests, (all) => [...all, data])
            if (replyTo !== undefined) yield* nats.respond(replyTo, InferenceReply, { accepted: true, workerId })
            yield* FiberMap.run(running, data.requestId, generate(data))
          })
        ),
        Effect.forkScoped
      )
      yield* cancel.pipe(
        Stream.runForEach(({ data }) =>
          FiberMap.remove(running, data.requestId).pipe(
            Effect.zipRight(SubscriptionRef.update(cancels, (all) => [...all, RequestId.make(data.requestId)]))
          )
        ),
        Effect.forkScoped
      )
      yield* announce.pipe(Stream.runForEach(() => register), Effect.forkScoped)
      yield* nats.flush
      yield* register

      return {
        workerId,
        models: options.models,
        requests: SubscriptionRef.get(requests),
        cancels: SubscriptionRef.get(cancels),
        awaitCancels: (count) => awaitAtLeast(cancels, count, "cancels"),
        awaitRequests: (count) => awaitAtLeast(requests, count, "requests")
      } satisfies FakeWorkerService
    })
  )

/** Polls `check` every 20 ms until it returns true; dies after `timeoutMs`. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, timeoutMs = 5_000, what = "condition") =>
  check.pipe(
    Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (ok) => ok }),
    Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error(`timed out waiting for ${what}`) }),
    Effect.orDie,
    Effect.asVoid
  )

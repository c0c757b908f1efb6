import { Clock, Deferred, Effect, Either, Exit, Metric, Option, Queue, Stream } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { type NoSkilledWorker, type NoWorkers, QueueFull, QueueTimeout } from "../domain/errors.js"
import type { WorkerInfo } from "../domain/worker.js"
import { Balancer, type SelectRequest } from "./balancer.js"
import { InFlight } from "./in-flight.js"
import { Registry } from "./registry.js"
import { queueDepth } from "./metrics.js"

export interface AdmissionRequest extends SelectRequest {
  /** Higher leaves the queue first; default 0. */
  readonly priority?: number
}

export type AdmissionError = NoWorkers | NoSkilledWorker | QueueFull | QueueTimeout

interface Waiter {
  readonly seq: number
  readonly request: AdmissionRequest
  readonly result: Deferred.Deferred<WorkerInfo, NoWorkers | NoSkilledWorker>
}

/** Higher priority first, then first come first served. */
const byPriority = (a: Waiter, b: Waiter) => (b.request.priority ?? 0) - (a.request.priority ?? 0) || a.seq - b.seq

/**
 * Admission: picks a worker with the Balancer and reserves a slot on it (an in-flight count), all
 * under one lock so two requests never take the same last slot. When every eligible worker is at
 * `maxConcurrent` the request waits, highest priority first, until a slot frees or a worker comes
 * online — up to `queue.max_wait_ms` (then `QueueTimeout`). With `queue.max_pending` requests
 * already waiting it gets `QueueFull` at once. The caller must `release` the slot it was given.
 */
export class AdmissionQueue extends Effect.Service<AdmissionQueue>()("controller/AdmissionQueue", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const registry = yield* Registry
    const balancer = yield* Balancer
    const inFlight = yield* InFlight
    const { maxPending, maxWaitMs } = config.controller.queue
    const retryAfterSeconds = Math.max(1, Math.ceil(maxWaitMs / 1000))

    const lock = yield* Effect.makeSemaphore(1)
    let waiters: ReadonlyArray<Waiter> = []
    let seq = 0
    const setWaiters = (next: ReadonlyArray<Waiter>) =>
      Effect.sync(() => {
        waiters = next
      }).pipe(Effect.zipRight(Metric.set(queueDepth, next.length)))

    /** One selection; reserves and returns the worker unless every eligible one is saturated. */
    const tryTake = (request: SelectRequest) =>
      Effect.gen(function* () {
        const workers = yield* registry.all
        const counts = yield* inFlight.snapshot
        const selection = yield* balancer.select(request, workers, counts)
        if (selection.saturated) return Option.none<WorkerInfo>()
        yield* inFlight.reserve(selection.worker.workerId)
        return Option.some(selection.worker)
      })

    /** Serves waiters in priority order while capacity lasts. */
    // Every slot release wakes this: with nobody waiting (the common case) it must not even take the lock.
    const serveWaiters = Effect.suspend(() => (waiters.length === 0 ? Effect.void : serveInOrder))
    const serveInOrder = lock.withPermits(1)(
      Effect.gen(function* () {
        const remaining: Array<Waiter> = []
        for (const waiter of waiters) {
          const taken = yield* Effect.either(tryTake(waiter.request))
          if (taken._tag === "Left") yield* Deferred.fail(waiter.result, taken.left)
          else if (Option.isSome(taken.right)) yield* Deferred.succeed(waiter.result, taken.right.value)
          else remaining.push(waiter)
        }
        yield* setWaiters(remaining)
      })
    )

    // Capacity appears when a slot is released or the registry changes (a worker joins or reports less load).
    const wakeups = yield* Queue.sliding<void>(1)
    yield* Stream.merge(inFlight.changes, registry.changes).pipe(
      Stream.runForEach(() => Queue.offer(wakeups, undefined)),
      Effect.forkScoped
    )
    yield* Queue.take(wakeups).pipe(Effect.zipRight(serveWaiters), Effect.forever, Effect.forkScoped)

    const enqueue = (request: AdmissionRequest) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          // Nobody jumps the queue: a new request takes a slot directly only when nobody waits.
          if (waiters.length === 0) {
            const taken = yield* tryTake(request)
            if (Option.isSome(taken)) return Either.right(taken.value)
          } else {
            // Still fail fast when no worker could ever serve it.
            yield* balancer.select(request, yield* registry.all, yield* inFlight.snapshot)
          }
          if (waiters.length >= maxPending) {
            return yield* new QueueFull({ model: request.model, pending: waiters.length, retryAfterSeconds })
          }
          const result = yield* Deferred.make<WorkerInfo, NoWorkers | NoSkilledWorker>()
          const waiter: Waiter = { seq: seq++, request, result }
          yield* setWaiters([...waiters, waiter].sort(byPriority))
          return Either.left(waiter)
        })
      )

    /** Removes a waiter that stopped waiting; gives back a slot it was granted meanwhile. */
    const abandon = (waiter: Waiter) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          yield* setWaiters(waiters.filter((w) => w !== waiter))
          const granted = yield* Deferred.poll(waiter.result)
          if (Option.isSome(granted)) {
            const exit = yield* Effect.exit(granted.value)
            if (Exit.isSuccess(exit)) yield* inFlight.release(exit.value.workerId)
          }
        })
      )

    const admit = (request: AdmissionRequest): Effect.Effect<WorkerInfo, AdmissionError> =>
      Effect.gen(function* () {
        const entered = yield* enqueue(request)
        if (Either.isRight(entered)) return entered.right
        const waiter = entered.left
        // Waiters ahead of it may only wait for other (busy) workers: let the serve pass, which goes in
        // priority order, hand it a free slot on a worker nobody ahead of it can use.
        yield* Queue.offer(wakeups, undefined)
        const since = yield* Clock.currentTimeMillis
        yield* Effect.logDebug(`queued a request for ${request.model}: every worker is busy`)
        return yield* Deferred.await(waiter.result).pipe(
          Effect.timeoutFail({
            duration: maxWaitMs,
            onTimeout: () => new QueueTimeout({ model: request.model, waitedMs: maxWaitMs, retryAfterSeconds })
          }),
          Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : abandon(waiter))),
          Effect.tapError(() =>
            Clock.currentTimeMillis.pipe(
              Effect.flatMap((now) => Effect.logDebug(`left the queue for ${request.model} after ${now - since} ms`))
            )
          )
        )
      })

    return {
      admit,
      release: (workerId: string) => inFlight.release(workerId),
      pending: Effect.sync(() => waiters.length)
    } as const
  })
}) {}

import { Effect, Either, Exit } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { QueueFull, QueueTimeout } from "../domain/errors.js"
import type { WorkerInfo } from "../domain/worker.js"
import { Balancer, honours, type SelectError, type SelectRequest } from "./balancer.js"
import { ControllerIdentity } from "./controller-identity.js"
import { DeadlineSweep } from "./deadline-sweep.js"
import { InFlight } from "./in-flight.js"
import { Registry } from "./registry.js"
import * as State from "./registry-state.js"
import { leavesBefore, ModelLine, type WaitingEntry } from "./waiting-room.js"
import { fromHeartbeat, reportedActive, type WorkerReport } from "./worker-load.js"

export interface AdmissionRequest extends SelectRequest {
  /** Higher leaves the queue first; default 0. */
  readonly priority?: number
  /**
   * When the request first asked for a slot (epoch ms, the Effect clock), for a request that comes
   * back after a worker refused it as `busy` (issue 14): its `queue.max_wait_ms` counts from then,
   * and it keeps its place before the requests that arrived after it. Default: now.
   */
  readonly waitingSince?: number
}

export type AdmissionError = SelectError | QueueFull | QueueTimeout

interface Waiter extends WaitingEntry {
  readonly request: AdmissionRequest
  left: boolean
  /** The slot it was given, if it was served while (or just as) it stopped waiting. */
  granted: WorkerInfo | undefined
  resume: ((exit: Exit.Exit<WorkerInfo, AdmissionError>) => void) | undefined
}

const fitsWorker = (worker: WorkerInfo) => (waiter: Waiter) =>
  !(waiter.request.exclude?.includes(worker.workerId) ?? false) &&
  (waiter.request.tags ?? []).every((tag) => (worker.tags ?? []).includes(tag)) &&
  honours(worker, waiter.request.model, waiter.request.requires) &&
  (waiter.request.eligible?.(worker) ?? true)

/**
 * Admission: picks a worker with the Balancer and reserves a slot on it (an `InFlight` count). When
 * every eligible worker is at `maxConcurrent` the request waits, highest priority first, until a
 * slot that fits it frees up or a worker comes online — up to `queue.max_wait_ms` (then
 * `QueueTimeout`). With `queue.max_pending` requests already waiting it gets `QueueFull` at once.
 * The caller must `release` the slot it was given.
 *
 * Cost per event (issue 11): waiters are kept per model (`waiting-room.ts`); a released slot on
 * worker W, or a registry change of W, looks only at the lines of the models W serves and hands the
 * slot to the first waiter there that W can take — never a pass over every waiter, never a
 * selection per waiter. Everything runs synchronously in the caller (JavaScript is single-threaded,
 * so two requests can never take the same last slot); only a waiting request suspends.
 */
export class AdmissionQueue extends Effect.Service<AdmissionQueue>()("controller/AdmissionQueue", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const registry = yield* Registry
    const balancer = yield* Balancer
    const inFlight = yield* InFlight
    const deadlines = yield* DeadlineSweep
    const { controllerId } = yield* ControllerIdentity
    const { maxPending, maxWaitMs } = config.controller.queue
    const retryAfterSeconds = Math.max(1, Math.ceil(maxWaitMs / 1000))

    const lines = new Map<string, ModelLine<Waiter>>()
    let pending = 0
    let seq = 0
    let latest = yield* registry.state
    const loadOf = (w: WorkerInfo) => inFlight.load(w.workerId)

    const leave = (waiter: Waiter) => {
      waiter.left = true
      pending--
      const line = lines.get(waiter.request.model)
      line?.gone()
      if (line !== undefined && line.size === 0) lines.delete(waiter.request.model)
    }

    const settle = (waiter: Waiter, exit: Exit.Exit<WorkerInfo, AdmissionError>) => {
      leave(waiter)
      if (Exit.isSuccess(exit)) waiter.granted = exit.value
      const resume = waiter.resume
      waiter.resume = undefined
      resume?.(exit)
    }

    /** Hands free slots of `workerId` to the waiters it can serve, in leaving order. */
    const serve = (workerId: string) => {
      if (pending === 0) return
      const worker = State.getWorker(latest, workerId)
      if (worker === undefined || worker.status !== "online") return
      const fits = fitsWorker(worker)
      while (inFlight.load(workerId) < worker.capabilities.maxConcurrent) {
        let best: Waiter | undefined
        for (const model of worker.skills.availableModels) {
          const candidate = lines.get(model)?.find(fits)
          if (candidate !== undefined && (best === undefined || leavesBefore(candidate, best) < 0)) best = candidate
        }
        if (best === undefined) return
        inFlight.reserve(workerId)
        settle(best, Exit.succeed(worker))
      }
    }

    /** A model lost its last online worker: its waiters learn it now rather than at their timeout. */
    const failUnserved = (workerId: string) => {
      const worker = State.getWorker(latest, workerId)
      if (worker === undefined) return
      for (const model of worker.skills.availableModels) {
        const line = lines.get(model)
        if (line === undefined || State.onlineServing(latest, model).length > 0) continue
        for (const waiter of line.all()) {
          const selection = balancer.select(waiter.request, latest, loadOf)
          if (Either.isLeft(selection)) settle(waiter, Exit.fail(selection.left))
        }
      }
    }

    /** Records what a worker said about its load (issue 14: `worker-load.ts`). */
    const record = (workerId: string, report: WorkerReport) => {
      const capacity = State.getWorker(latest, workerId)?.capabilities.maxConcurrent ?? 0
      inFlight.reported(workerId, reportedActive(report, capacity), report.ownAtWorker)
    }

    // Capacity appears when a worker registers, comes back online or reports less load; it
    // disappears for good when a model's last worker goes offline.
    yield* registry.listen((change) => {
      const previous = latest
      latest = change.state
      for (const t of change.transitions) if (t.to === "offline" && pending > 0) failUnserved(t.workerId)
      for (const id of change.touched) {
        // Only new heartbeat metrics are a new report: a change that keeps them (offline, a
        // re-registration) says nothing new of the worker's load.
        const metrics = State.getWorker(latest, id)?.metrics
        if (metrics !== undefined && metrics !== State.getWorker(previous, id)?.metrics) record(id, fromHeartbeat(metrics, controllerId))
        serve(id)
      }
    })

    // Queue timeouts: only the oldest waiters of each line can have waited too long.
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        deadlines.add({
          check: (now) => {
            if (pending === 0) return
            for (const line of [...lines.values()]) {
              for (const waiter of line.expired(now - maxWaitMs)) {
                settle(waiter, Exit.fail(new QueueTimeout({ model: waiter.request.model, waitedMs: now - waiter.since, retryAfterSeconds })))
              }
            }
          }
        })
      ),
      (remove) => Effect.sync(remove)
    )

    const wait = (request: AdmissionRequest) =>
      Effect.async<WorkerInfo, AdmissionError>((resume) => {
        const waiter: Waiter = {
          seq: seq++,
          priority: request.priority ?? 0,
          since: request.waitingSince ?? deadlines.now(),
          request,
          left: false,
          granted: undefined,
          resume: (exit) => resume(exit)
        }
        let line = lines.get(request.model)
        if (line === undefined) {
          line = new ModelLine<Waiter>()
          lines.set(request.model, line)
        }
        line.add(waiter)
        pending++
        return Effect.sync(() => {
          // Interrupted (the client left). A slot granted just before is given back to the others.
          if (!waiter.left) leave(waiter)
          waiter.resume = undefined
          const granted = waiter.granted
          if (granted !== undefined) {
            waiter.granted = undefined
            release(granted.workerId)
          }
        })
      })

    const admit = (request: AdmissionRequest): Effect.Effect<WorkerInfo, AdmissionError> =>
      Effect.suspend(() => {
        const selection = balancer.select(request, latest, loadOf)
        if (Either.isLeft(selection)) return Effect.fail(selection.left)
        // A free slot that fits is taken at once: had a waiter been able to use it, `serve` would
        // already have handed it over.
        if (!selection.right.saturated) {
          inFlight.reserve(selection.right.worker.workerId)
          return Effect.succeed(selection.right.worker)
        }
        if (pending >= maxPending) return Effect.fail(new QueueFull({ model: request.model, pending, retryAfterSeconds }))
        return wait(request)
      })

    const release = (workerId: string): void => {
      inFlight.release(workerId)
      serve(workerId)
    }

    /**
     * A worker's ack or refusal said how loaded it is (issue 14): recorded, and any slot that the
     * report frees goes to a waiter at once.
     */
    const reported = (workerId: string, report: WorkerReport): void => {
      record(workerId, report)
      serve(workerId)
    }

    return {
      admit,
      release,
      reported,
      /** Requests waiting now. */
      pending: Effect.sync(() => pending),
      pendingNow: (): number => pending
    } as const
  }),
  dependencies: [Balancer.Default, ControllerIdentity.Default, DeadlineSweep.Default, InFlight.Default, Registry.Default]
}) {}

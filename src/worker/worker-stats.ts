import * as Os from "node:os"
import { Clock, Effect, Option, Ref } from "effect"
import type { RequestCounters, WorkerMetrics } from "../domain/worker.js"
import { InferenceEngine } from "./engines/inference-engine.js"

/**
 * Request counters of this worker. `total` counts every accepted request (refusals are not
 * requests); each accepted request ends as exactly one of `succeeded` (a `done` was sent), `failed`
 * (an `error` was sent: engine error, timeout, shutdown) or `cancelled` (stopped by a cancel: no
 * message sent; or stopped because its controller is gone: `error` `controller_gone`). `cancelled` is not part of the heartbeat, so a cancelled request counts in `total`
 * only.
 */
export interface StatsSnapshot extends RequestCounters {
  readonly cancelled: number
  /** Tokens produced since start. */
  readonly tokens: number
}

export type Outcome = "succeeded" | "failed" | "cancelled"

const empty: StatsSnapshot = { active: 0, total: 0, succeeded: 0, failed: 0, cancelled: 0, tokens: 0 }

/** Takes a slot when fewer than `max` requests are active. */
export const acquireSlot = (s: StatsSnapshot, max: number): readonly [boolean, StatsSnapshot] =>
  s.active >= max ? [false, s] : [true, { ...s, active: s.active + 1, total: s.total + 1 }]

export const releaseSlot = (s: StatsSnapshot, outcome: Outcome): StatsSnapshot => ({
  ...s,
  active: Math.max(0, s.active - 1),
  succeeded: s.succeeded + (outcome === "succeeded" ? 1 : 0),
  failed: s.failed + (outcome === "failed" ? 1 : 0),
  cancelled: s.cancelled + (outcome === "cancelled" ? 1 : 0)
})

export class WorkerStats extends Effect.Service<WorkerStats>()("worker/WorkerStats", {
  effect: Effect.gen(function* () {
    const ref = yield* Ref.make(empty)
    // Counted from the engine's emit callback for every batch: a plain number, no Effect per batch.
    let tokens = 0
    /** Most requests active at once since `takePeak` last read it. */
    let peak = 0
    // `active` as a plain number too, for answers given from a NATS callback (probes, issue 13);
    // set inside the updates below, which a `Ref` runs exactly once each.
    let active = 0
    return {
      snapshot: Effect.map(Ref.get(ref), (s): StatsSnapshot => ({ ...s, tokens })),
      /** Takes a request slot when fewer than `max` are active; false when busy. */
      tryAcquire: (max: number) =>
        Ref.modify(ref, (s) => {
          const result = acquireSlot(s, max)
          active = result[1].active
          if (active > peak) peak = active
          return result
        }),
      /** Most requests active at once since the previous call (issue 14: the heartbeat's `peakActive`). */
      takePeak: Effect.map(Ref.get(ref), (s) => {
        const seen = Math.max(peak, s.active)
        peak = s.active
        return seen
      }),
      release: (outcome: Outcome) =>
        Ref.update(ref, (s) => {
          const next = releaseSlot(s, outcome)
          active = next.active
          return next
        }),
      /** Requests holding a slot now, read without an Effect. */
      activeNow: (): number => active,
      countTokens: (n: number): void => {
        tokens += n
      }
    } as const
  })
}) {}

/** The CPU time counters of `os.cpus()`. */
export interface CpuTimes {
  readonly user: number
  readonly nice: number
  readonly sys: number
  readonly idle: number
  readonly irq: number
}

/** Fraction 0..1 of all cores busy between two samples (0 when nothing elapsed). */
export const cpuUsageBetween = (previous: ReadonlyArray<CpuTimes>, next: ReadonlyArray<CpuTimes>): number => {
  let busy = 0
  let total = 0
  next.forEach((n, i) => {
    const p = previous[i]
    if (p === undefined) return
    const b = n.user - p.user + (n.nice - p.nice) + (n.sys - p.sys) + (n.irq - p.irq)
    const t = b + (n.idle - p.idle)
    if (b >= 0 && t > 0) {
      busy += b
      total += t
    }
  })
  return total > 0 ? Math.min(1, Math.max(0, busy / total)) : 0
}

/** Fraction 0..1 of physical memory in use. */
export const memoryUsage = (free: number, total: number): number =>
  total > 0 ? Math.min(1, Math.max(0, 1 - free / total)) : 0

/** Tokens per second between two samples. */
export const tokensPerSecond = (tokens: number, previousTokens: number, elapsedMs: number): number =>
  elapsedMs > 0 ? Math.max(0, ((tokens - previousTokens) * 1000) / elapsedMs) : 0

const readCpuTimes = (): ReadonlyArray<CpuTimes> => Os.cpus().map((c) => c.times)

/** What the heartbeat reports beyond the counters (issue 14); absent fields are left out. */
export interface SamplerOptions {
  /** The worker's `max_concurrent`. */
  readonly maxConcurrent?: number
  /** Running requests per owning controller, read at each sample. */
  readonly activeByController?: () => Record<string, number>
}

/**
 * Heartbeat metrics: CPU usage and throughput over the time since the previous sample (the first
 * sample measures from the sampler's creation), the engine's prompt-cache counters when the
 * engine in the context reports them (read optionally: a sampler needs no engine), and with
 * `options` the worker's own view of its load for several controllers (issue 14):
 * `maxConcurrent`, `activeByController`, `peakActive`.
 */
export const makeMetricsSampler = (options: SamplerOptions = {}) => Effect.gen(function* () {
  const stats = yield* WorkerStats
  const promptCache = Option.flatMap(yield* Effect.serviceOption(InferenceEngine), (e) => Option.fromNullable(e.promptCache))
  const start = yield* stats.snapshot
  const previous = yield* Ref.make({ cpu: readCpuTimes(), tokens: start.tokens, at: yield* Clock.currentTimeMillis })
  const sample: Effect.Effect<WorkerMetrics> = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const snapshot = yield* stats.snapshot
    const cpu = readCpuTimes()
    const before = yield* Ref.getAndSet(previous, { cpu, tokens: snapshot.tokens, at: now })
    const peakActive = yield* stats.takePeak
    return {
      cpuUsage: cpuUsageBetween(before.cpu, cpu),
      memoryUsage: memoryUsage(Os.freemem(), Os.totalmem()),
      requests: {
        active: snapshot.active,
        total: snapshot.total,
        succeeded: snapshot.succeeded,
        failed: snapshot.failed
      },
      tokensPerSecond: tokensPerSecond(snapshot.tokens, before.tokens, now - before.at),
      ...(Option.isSome(promptCache) ? { promptCache: yield* promptCache.value } : {}),
      peakActive,
      ...(options.maxConcurrent === undefined ? {} : { maxConcurrent: options.maxConcurrent }),
      ...(options.activeByController === undefined ? {} : { activeByController: options.activeByController() })
    }
  })
  return { sample } as const
})

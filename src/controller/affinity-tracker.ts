import { Clock, Effect, type Metric, type MetricLabel } from "effect"
import type { AffinityConfig } from "../config/schema.js"
import { type PromptChain, promptChain, type PromptInput } from "../domain/prompt-chain.js"
import type { WorkerInfo } from "../domain/worker.js"
import * as Metrics from "./metrics.js"
import {
  type AffinityInput,
  classifyDispatch,
  type DispatchResult,
  forgetWorker,
  indexEntries,
  makePrefixIndex,
  matchTokens,
  recentDispatches,
  record,
  retainWorkers
} from "./prefix-affinity.js"

/**
 * The Balancer's prefix-affinity state (issue 16): the per-worker prompt index of
 * src/controller/prefix-affinity.ts behind three calls, in the order a request makes them:
 *
 * 1. `chainOf(request)`: the prompt's block chain, computed once per request by the Router;
 * 2. `selectionInput(chain, workers)`: each live worker's match, for `selectWorker` (which stays
 *    pure); it also forgets workers that are gone or offline, whose caches are gone too;
 * 3. `recordDispatch(workerId, chain)`: after the worker accepted the request, counts an affinity
 *    hit, displacement or miss (`classifyDispatch`; `mlx_cluster_affinity_*`) and remembers the
 *    prompt for that worker.
 *
 * With `enabled: false` it keeps nothing: `chainOf` is `undefined` and the rest does nothing.
 * `selectionInputAt` and `recordDispatchAt` are the same steps, synchronous with the time passed
 * in (no metrics, and no forgetting: `selectionInputAt` may be given only the candidates), for
 * callers that select outside an Effect; they forget workers with `forget` (on an offline
 * transition) or `retain`.
 */
export interface AffinityTracker {
  readonly enabled: boolean
  readonly chainOf: (input: PromptInput) => PromptChain | undefined
  readonly selectionInput: (
    chain: PromptChain | undefined,
    workers: ReadonlyArray<WorkerInfo>
  ) => Effect.Effect<AffinityInput | undefined>
  readonly selectionInputAt: (
    chain: PromptChain | undefined,
    workers: ReadonlyArray<WorkerInfo>,
    now: number
  ) => AffinityInput | undefined
  readonly recordDispatch: (workerId: string, chain: PromptChain) => Effect.Effect<DispatchResult | undefined>
  readonly recordDispatchAt: (workerId: string, chain: PromptChain, now: number) => DispatchResult | undefined
  /** Forgets a worker that went offline or left. */
  readonly forget: (workerId: string) => void
  /** Forgets every worker not in `workers` or offline there. */
  readonly retain: (workers: ReadonlyArray<WorkerInfo>) => void
  /** Block hashes held over all workers (the index's memory). */
  readonly entries: Effect.Effect<number>
  /** Dispatches by verdict since the controller started (the dashboard's hit rate). */
  readonly counts: () => AffinityCounts
}

export type AffinityCounts = Readonly<Record<DispatchResult, number>>

// Children of the tagged keys (metrics.ts): updating them resolves no registry entry per dispatch.
const byResult: Record<DispatchResult, Metric.Metric.Counter<number>> = {
  hit: Metrics.affinityChild("hit"),
  displaced: Metrics.affinityChild("displaced"),
  miss: Metrics.affinityChild("miss")
}
const cachedTokens = Metrics.affinityPromptTokensChild("true")
const uncachedTokens = Metrics.affinityPromptTokensChild("false")
const NO_LABELS: ReadonlyArray<MetricLabel.MetricLabel> = []

export const makeAffinityTracker = (settings: AffinityConfig): AffinityTracker => {
  const index = makePrefixIndex({ maxBlocksPerWorker: settings.maxBlocksPerWorker, maxAgeMs: settings.maxAgeMs })
  const choice = { minPrefixTokens: settings.minPrefixTokens, maxImbalance: settings.maxImbalance }
  const enabled = settings.enabled
  const counts: Record<DispatchResult, number> = { hit: 0, displaced: 0, miss: 0 }

  const selectionInputAt = (
    chain: PromptChain | undefined,
    workers: ReadonlyArray<WorkerInfo>,
    now: number
  ): AffinityInput | undefined => {
    if (!enabled || chain === undefined) return undefined
    const matches = new Map<string, number>()
    const dispatches = new Map<string, number>()
    for (const w of workers) {
      if (w.status === "offline") continue
      const tokens = matchTokens(index, w.workerId, chain, now)
      if (tokens > 0) matches.set(w.workerId, tokens)
      dispatches.set(w.workerId, recentDispatches(index, w.workerId, now))
    }
    return { matches, recentDispatches: dispatches, settings: choice }
  }

  /** Records the dispatch; what the chosen worker held before, the most any worker held, and the verdict. */
  const dispatchAt = (workerId: string, chain: PromptChain, now: number) => {
    const matched = matchTokens(index, workerId, chain, now)
    let best = matched
    for (const other of index.workers.keys()) best = Math.max(best, matchTokens(index, other, chain, now))
    record(index, workerId, chain, now)
    const result = classifyDispatch(matched, best, settings.minPrefixTokens)
    counts[result]++
    return { matched, result }
  }

  const retain = (workers: ReadonlyArray<WorkerInfo>) =>
    retainWorkers(index, new Set(workers.filter((w) => w.status !== "offline").map((w) => w.workerId)))

  const recordDispatch = (workerId: string, chain: PromptChain) =>
    !enabled
      ? Effect.succeed(undefined)
      : // Once per request: one Effect reading the clock, the index and the metrics updated synchronously.
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            const { matched, result } = dispatchAt(workerId, chain, clock.unsafeCurrentTimeMillis())
            byResult[result].unsafeUpdate(1, NO_LABELS)
            cachedTokens.unsafeUpdate(matched, NO_LABELS)
            uncachedTokens.unsafeUpdate(chain.tokens - matched, NO_LABELS)
            return result
          })
        )

  return {
    enabled,
    chainOf: (input) => (enabled ? promptChain(input, settings.blockTokens) : undefined),
    selectionInput: (chain, workers) =>
      enabled
        ? Effect.map(Clock.currentTimeMillis, (now) => {
            retain(workers)
            return selectionInputAt(chain, workers, now)
          })
        : Effect.succeed(undefined),
    selectionInputAt,
    recordDispatch,
    recordDispatchAt: (workerId, chain, now) => (enabled ? dispatchAt(workerId, chain, now).result : undefined),
    forget: (workerId) => forgetWorker(index, workerId),
    retain,
    entries: Effect.sync(() => indexEntries(index)),
    counts: () => ({ ...counts })
  }
}

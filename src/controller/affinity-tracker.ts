import { Clock, Effect, Metric } from "effect"
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

const byResult: Record<DispatchResult, Metric.Metric.Counter<number>> = {
  hit: Metric.tagged(Metrics.affinityTotal, "result", "hit"),
  displaced: Metric.tagged(Metrics.affinityTotal, "result", "displaced"),
  miss: Metric.tagged(Metrics.affinityTotal, "result", "miss")
}
const cachedTokens = Metric.tagged(Metrics.affinityPromptTokensTotal, "cached", "true")
const uncachedTokens = Metric.tagged(Metrics.affinityPromptTokensTotal, "cached", "false")

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
      : Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const { matched, result } = yield* Effect.sync(() => dispatchAt(workerId, chain, now))
          yield* Metric.increment(byResult[result])
          yield* Metric.incrementBy(cachedTokens, matched)
          yield* Metric.incrementBy(uncachedTokens, chain.tokens - matched)
          return result
        })

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

import { Clock, Effect, Metric } from "effect"
import type { AffinityConfig } from "../config/schema.js"
import { type PromptChain, promptChain, type PromptInput } from "../domain/prompt-chain.js"
import type { WorkerInfo } from "../domain/worker.js"
import * as Metrics from "./metrics.js"
import {
  type AffinityInput,
  classifyDispatch,
  type DispatchResult,
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
 */
export interface AffinityTracker {
  readonly enabled: boolean
  readonly chainOf: (input: PromptInput) => PromptChain | undefined
  readonly selectionInput: (
    chain: PromptChain | undefined,
    workers: ReadonlyArray<WorkerInfo>
  ) => Effect.Effect<AffinityInput | undefined>
  readonly recordDispatch: (workerId: string, chain: PromptChain) => Effect.Effect<DispatchResult | undefined>
  /** Block hashes held over all workers (the index's memory). */
  readonly entries: Effect.Effect<number>
}

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

  const selectionInput = (chain: PromptChain | undefined, workers: ReadonlyArray<WorkerInfo>) =>
    !enabled
      ? Effect.succeed(undefined)
      : Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync((): AffinityInput | undefined => {
            const live = workers.filter((w) => w.status !== "offline")
            retainWorkers(index, new Set(live.map((w) => w.workerId)))
            if (chain === undefined) return undefined
            const matches = new Map<string, number>()
            for (const w of live) {
              const tokens = matchTokens(index, w.workerId, chain, now)
              if (tokens > 0) matches.set(w.workerId, tokens)
            }
            const dispatches = new Map<string, number>()
            for (const w of live) dispatches.set(w.workerId, recentDispatches(index, w.workerId, now))
            return { matches, recentDispatches: dispatches, settings: choice }
          })
        )

  const recordDispatch = (workerId: string, chain: PromptChain) =>
    !enabled
      ? Effect.succeed(undefined)
      : Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const { matched, best } = yield* Effect.sync(() => {
            const before = matchTokens(index, workerId, chain, now)
            let most = before
            for (const other of index.workers.keys()) most = Math.max(most, matchTokens(index, other, chain, now))
            record(index, workerId, chain, now)
            return { matched: before, best: most }
          })
          const result = classifyDispatch(matched, best, settings.minPrefixTokens)
          yield* Metric.increment(byResult[result])
          yield* Metric.incrementBy(cachedTokens, matched)
          yield* Metric.incrementBy(uncachedTokens, chain.tokens - matched)
          return result
        })

  return {
    enabled,
    chainOf: (input) => (enabled ? promptChain(input, settings.blockTokens) : undefined),
    selectionInput,
    recordDispatch,
    entries: Effect.sync(() => indexEntries(index))
  }
}

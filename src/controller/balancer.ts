import { Effect, Either } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { BalancingStrategy } from "../config/schema.js"
import { ModelNotFound, NoSkilledWorker, NoWorkers, UnsupportedParameter } from "../domain/errors.js"
import { featuresFor, type Requirement } from "../domain/features.js"
import type { PromptChain } from "../domain/prompt-chain.js"
import type { WorkerInfo } from "../domain/worker.js"
import { makeAffinityTracker } from "./affinity-tracker.js"
import { type AffinityInput, preferByAffinity } from "./prefix-affinity.js"
import * as State from "./registry-state.js"

/** What the Router asks the balancer for. */
export interface SelectRequest {
  readonly model: string
  /** The worker must carry every one of these tags. */
  readonly tags?: ReadonlyArray<string>
  /** Worker ids not to choose (already tried for this request). */
  readonly exclude?: ReadonlyArray<string>
  /** The prompt's block chain (`Balancer.affinity.chainOf`), for prefix affinity. */
  readonly prompt?: PromptChain | undefined
  /** extension (issue 13): only workers for which this holds (a migration: those that can continue the stream). */
  readonly eligible?: ((worker: WorkerInfo) => boolean) | undefined
  /** Capabilities the worker's engine must honour for the model (issue 12). */
  readonly requires?: ReadonlyArray<Requirement>
}

/**
 * The chosen worker. `saturated`: every eligible worker's load had reached its
 * `capabilities.maxConcurrent`, so the worker is only the best of the busy ones and the Router
 * should queue the request instead of dispatching it.
 */
export interface Selection {
  readonly worker: WorkerInfo
  readonly saturated: boolean
}

export type SelectError = ModelNotFound | NoWorkers | NoSkilledWorker | UnsupportedParameter

/** The worker's engine honours every one of `requires` for `model`. */
export const honours = (worker: WorkerInfo, model: string, requires: ReadonlyArray<Requirement> | undefined): boolean => {
  if (requires === undefined || requires.length === 0) return true
  const features = featuresFor(worker.capabilities, model)
  return requires.every((r) => features.includes(r.feature))
}

/**
 * The workers of `workers` that honour every requirement, or the 400 naming the first parameter
 * that left none (with the one already required, when each is honoured somewhere but not together).
 */
export const honouring = (
  workers: ReadonlyArray<WorkerInfo>,
  model: string,
  requires: ReadonlyArray<Requirement>
): Either.Either<ReadonlyArray<WorkerInfo>, UnsupportedParameter> => {
  const has = (w: WorkerInfo, r: Requirement) => featuresFor(w.capabilities, model).includes(r.feature)
  let able = workers
  for (let i = 0; i < requires.length; i++) {
    const r = requires[i] as Requirement
    const next = able.filter((w) => has(w, r))
    if (next.length === 0) {
      // Honoured somewhere, only not with what was already required: name the first one it clashes with.
      const earlier = requires.slice(0, i)
      const together = workers.some((w) => has(w, r))
        ? (earlier.find((p) => !workers.some((w) => has(w, p) && has(w, r))) ?? earlier[0])
        : undefined
      return Either.left(
        new UnsupportedParameter({ model, param: r.param, feature: r.feature, ...(together === undefined ? {} : { together: together.param }) })
      )
    }
    able = next
  }
  return Either.right(able)
}

/** Extra memory a model needs beyond its weights (KV cache, activations). */
export const MEMORY_OVERHEAD = 1.2
/** Estimate when a model's name tells nothing about its size. */
export const DEFAULT_MODEL_MEMORY_GB = 8
const BYTES_PER_GB = 1024 ** 3

/** The table of docs/contract.md §5.2 for the common sizes; other sizes are `params × 1.2`, rounded up. */
const KNOWN_SIZES_GB: ReadonlyMap<number, number> = new Map([
  [3, 4],
  [7, 8],
  [13, 16],
  [30, 32]
])

/**
 * The parameter count, in billions, that a model name states as a whole token: `Llama-3.2-3B` → 3,
 * `Qwen2.5-1.5B` → 1.5, `llama-13b` → 13 (never 3). `undefined` when the name states none.
 */
export const parseParamsBillions = (model: string): number | undefined => {
  const match = /(?:^|[^0-9.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z0-9])/.exec(model)
  const digits = match?.[1]
  if (digits === undefined) return undefined
  const params = Number(digits)
  return Number.isFinite(params) && params > 0 ? params : undefined
}

/** Memory (GB) a model needs, guessed from its name: 3B → 4, 7B → 8, 13B → 16, 30B → 32, unknown → 8. */
export const estimateModelMemoryGB = (model: string): number => {
  const params = parseParamsBillions(model)
  if (params === undefined) return DEFAULT_MODEL_MEMORY_GB
  return KNOWN_SIZES_GB.get(params) ?? Math.ceil(params * MEMORY_OVERHEAD)
}

/** Memory (GB) `model` needs on `worker`: from the size the worker reports, else from the name. */
export const memoryNeedGB = (worker: WorkerInfo, model: string): number => {
  const bytes = worker.skills.modelSizes[model]
  return bytes !== undefined && bytes > 0 ? (bytes / BYTES_PER_GB) * MEMORY_OVERHEAD : estimateModelMemoryGB(model)
}

/** A worker's load as the balancer weighs it: requests running there (see `InFlight.load`). */
export type LoadOf = (worker: WorkerInfo) => number

/**
 * Round robin over `candidates` (non-empty): in id order, the first worker after `lastSelected`,
 * wrapping around. With k candidates, k consecutive picks choose each of them once, whatever order
 * they are given in, and a changing candidate set still rotates. One pass, no sort.
 */
export const pickRoundRobin = (candidates: ReadonlyArray<WorkerInfo>, lastSelected: string | undefined): WorkerInfo => {
  let smallest: WorkerInfo | undefined
  let next: WorkerInfo | undefined
  for (const w of candidates) {
    if (smallest === undefined || w.workerId < smallest.workerId) smallest = w
    if (lastSelected !== undefined && w.workerId > lastSelected && (next === undefined || w.workerId < next.workerId)) next = w
  }
  return (next ?? smallest) as WorkerInfo
}

const minBy = (workers: ReadonlyArray<WorkerInfo>, key: (w: WorkerInfo) => number): ReadonlyArray<WorkerInfo> => {
  let best = Number.POSITIVE_INFINITY
  for (const w of workers) best = Math.min(best, key(w))
  return workers.filter((w) => key(w) === best)
}

/** Sorted union of the models that the given workers serve. */
export const servedModels = (workers: ReadonlyArray<WorkerInfo>): ReadonlyArray<string> =>
  Array.from(new Set(workers.flatMap((w) => w.skills.availableModels))).sort()

/** What is known about the cluster when no online worker serves a model: enough to say why. */
export interface UnservedContext {
  /** Some registered worker (online or not) serves the model. */
  readonly known: boolean
  readonly onlineWorkers: number
  /** The models online workers serve (only read to word the error). */
  readonly served: () => ReadonlyArray<string>
}

/** The error for a model no online worker serves: unknown (404), nobody online, or nobody online with it. */
export const unservedError = (request: SelectRequest, context: UnservedContext): SelectError => {
  const { model } = request
  if (!context.known) return new ModelNotFound({ model })
  if (context.onlineWorkers === 0) return new NoWorkers({ model })
  return new NoSkilledWorker({ model, available: context.served() })
}

/**
 * The selection algorithm, pure. `workers` may be every worker or only the candidates for the model;
 * `lastSelected` is the round-robin cursor (the id chosen last).
 *
 * 1. online workers that serve the model (none: `unservedError`, with `context` when given);
 * 2. tags: the worker has every requested tag (none: `NoSkilledWorker`); then `requires`: its
 *    engine honours every capability the request uses for the model (none: `UnsupportedParameter`);
 * 3. `exclude` drops workers already tried, `eligible` the ones that cannot take this request
 *    (none left: `NoWorkers`);
 * 4. capacity: workers whose load is below `maxConcurrent`; if there are none, all remaining ones
 *    compete and the selection is `saturated`;
 * 5. by strategy —
 *    `smart`: prefer workers whose GPU memory fits the model (all if none fits), then, given
 *    `affinity`, the workers holding the longest prefix of the prompt unless they are too loaded
 *    (`preferByAffinity`), then least load, then highest `priority` (default 0), then (given
 *    `affinity`) the worker sent the fewest requests recently, then round robin;
 *    `least_loaded`: least load, then round robin;
 *    `round_robin`: round robin.
 */
export const selectWorker = (
  strategy: BalancingStrategy,
  request: SelectRequest,
  workers: ReadonlyArray<WorkerInfo>,
  load: LoadOf,
  lastSelected: string | undefined,
  context?: UnservedContext,
  affinity?: AffinityInput
): Either.Either<Selection, SelectError> => {
  const { model } = request
  const skilled = workers.filter((w) => w.status === "online" && w.skills.availableModels.includes(model))
  if (skilled.length === 0) {
    const online = workers.filter((w) => w.status === "online")
    return Either.left(
      unservedError(
        request,
        context ?? {
          known: workers.some((w) => w.skills.availableModels.includes(model)),
          onlineWorkers: online.length,
          served: () => servedModels(online)
        }
      )
    )
  }

  const tags = request.tags ?? []
  const tagged = tags.length === 0 ? skilled : skilled.filter((w) => tags.every((tag) => (w.tags ?? []).includes(tag)))
  if (tagged.length === 0) {
    return Either.left(new NoSkilledWorker({ model, available: servedModels(skilled), tags }))
  }

  // issue 12: only workers whose engine honours what the request uses; none: a 400 naming the parameter.
  const requires = request.requires ?? []
  const able = requires.length === 0 ? Either.right(tagged) : honouring(tagged, model, requires)
  if (Either.isLeft(able)) return Either.left(able.left)

  const exclude = request.exclude
  const untried = exclude === undefined || exclude.length === 0 ? able.right : able.right.filter((w) => !exclude.includes(w.workerId))
  const eligible = request.eligible
  const candidates = eligible === undefined ? untried : untried.filter(eligible)
  if (candidates.length === 0) return Either.left(new NoWorkers({ model }))

  const withCapacity = candidates.filter((w) => load(w) < w.capabilities.maxConcurrent)
  const saturated = withCapacity.length === 0
  const pool = saturated ? candidates : withCapacity

  const finalists = ((): ReadonlyArray<WorkerInfo> => {
    switch (strategy) {
      case "round_robin":
        return pool
      case "least_loaded":
        return minBy(pool, load)
      case "smart": {
        const fitting = pool.filter((w) => w.hardware.gpuMemoryGB >= memoryNeedGB(w, model))
        const fit = fitting.length > 0 ? fitting : pool
        // Prefix affinity (issue 16): see src/controller/prefix-affinity.ts.
        const warm =
          affinity === undefined
            ? fit
            : preferByAffinity(fit, load, (w) => affinity.matches.get(w.workerId) ?? 0, affinity.settings).workers
        const preferred = minBy(minBy(warm, load), (w) => -(w.priority ?? 0))
        return affinity === undefined ? preferred : minBy(preferred, (w) => affinity.recentDispatches.get(w.workerId) ?? 0)
      }
    }
  })()
  return Either.right({ worker: pickRoundRobin(finalists, lastSelected), saturated })
}

/**
 * Smart load balancing (docs/contract.md §5.2) with the strategy of `load_balancing.strategy`. Holds the
 * round-robin cursor, so that tied workers take turns across calls. Selection reads the registry's
 * index of online workers per model: its cost grows with the workers serving that model, not with
 * the registry.
 */
export class Balancer extends Effect.Service<Balancer>()("controller/Balancer", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const strategy = config.loadBalancing.strategy
    let cursor: string | undefined
    // Prefix affinity (issue 16): the index of prompts sent to each worker; only `smart` selects by it.
    const affinity = makeAffinityTracker(config.loadBalancing.affinity)
    // The index ages its entries on the Effect clock, the one `recordDispatch` stamps them with.
    const clock = yield* Effect.clock

    /** Chooses a worker for `request` in registry state `state`, weighing each candidate with `load`. */
    const select = (request: SelectRequest, state: State.RegistryState, load: LoadOf): Either.Either<Selection, SelectError> => {
      const candidates = State.onlineServing(state, request.model)
      const result =
        candidates.length === 0
          ? Either.left(
              unservedError(request, {
                known: State.isKnownModel(state, request.model),
                onlineWorkers: State.counts(state).online,
                served: () => State.servedModels(state).map((m) => m.model)
              })
            )
          : selectWorker(
              strategy,
              request,
              candidates,
              load,
              cursor,
              undefined,
              strategy === "smart" ? affinity.selectionInputAt(request.prompt, candidates, clock.unsafeCurrentTimeMillis()) : undefined
            )
      if (Either.isRight(result)) cursor = result.right.worker.workerId
      return result
    }

    return { select, affinity } as const
  })
}) {}

import type { PromptChain } from "../domain/prompt-chain.js"

/**
 * Cache-aware routing (issue 16), the pure part: which prompts each worker has recently served,
 * and the choice the Balancer makes with it.
 *
 * A worker that served a conversation's previous turn still holds its prompt in its prefix cache
 * (mlx_lm.server's prompt cache, vLLM's paged KV cache), so the next turn skips most of its
 * prefill there and nowhere else. The controller cannot see those caches, so it keeps an
 * approximate index of its own, in the spirit of SGLang's router (an approximate radix tree per
 * worker): for every worker, the prompt-chain hashes (src/domain/prompt-chain.ts) of the requests
 * it dispatched there.
 *
 * **The index.** Per worker, a map from block hash to the time it was last recorded, kept in
 * least-recently-used order (a JS `Map` iterates in insertion order; touching deletes and
 * re-inserts). `record` touches a chain's blocks from the last to the first, so a block is always
 * at least as recent as every block after it: eviction takes the tails of old prompts first and
 * keeps shared prefixes (system prompts) longest, as a radix tree's leaf-first LRU does, and the set
 * of hashes a worker holds stays closed under prefixes. Bounds: at most `maxBlocksPerWorker`
 * entries per worker (oldest evicted on insert) and none older than `maxAgeMs` (expired entries do
 * not match and are dropped on the next record). It is deterministic, with time passed in, but
 * mutable: copying thousands of entries per request would cost more than the routing gains. Its
 * owner touches it only inside `Effect.sync`.
 *
 * **The choice** (`preferByAffinity`): see there.
 */

export interface IndexLimits {
  /** Most block hashes remembered per worker. */
  readonly maxBlocksPerWorker: number
  /** A block not recorded again within this time is forgotten. */
  readonly maxAgeMs: number
}

export interface PrefixIndex {
  readonly limits: IndexLimits
  /** Worker id → block hash → last recorded (epoch ms), least recently recorded first. */
  readonly workers: Map<string, Map<number, number>>
  /** Worker id → its recent dispatches, decayed: the count as of `at`. */
  readonly dispatches: Map<string, { readonly count: number; readonly at: number }>
}

export const makePrefixIndex = (limits: IndexLimits): PrefixIndex => ({ limits, workers: new Map(), dispatches: new Map() })

/** `count` as of `at`, seen at `now`: it decays by e every `maxAgeMs`. */
const decayed = (count: number, at: number, now: number, maxAgeMs: number): number =>
  count * Math.exp(-Math.max(0, now - at) / maxAgeMs)

/**
 * How many requests `workerId` was recently sent (each one's weight decays by e every
 * `maxAgeMs`): the tie-break that spreads new conversations (see `AffinityInput.recentDispatches`).
 */
export const recentDispatches = (index: PrefixIndex, workerId: string, now: number): number => {
  const d = index.dispatches.get(workerId)
  return d === undefined ? 0 : decayed(d.count, d.at, now, index.limits.maxAgeMs)
}

/** Drops the entries of `blocks` older than the age limit; they are the first ones in LRU order. */
const dropExpired = (blocks: Map<number, number>, now: number, maxAgeMs: number): void => {
  for (const [hash, at] of blocks) {
    if (now - at <= maxAgeMs) return
    blocks.delete(hash)
  }
}

/** Remembers that `workerId` was sent the prompt `chain` at `now`. */
export const record = (index: PrefixIndex, workerId: string, chain: PromptChain, now: number): void => {
  const { maxBlocksPerWorker, maxAgeMs } = index.limits
  index.dispatches.set(workerId, { count: recentDispatches(index, workerId, now) + 1, at: now })
  if (maxBlocksPerWorker <= 0 || chain.hashes.length === 0) return
  let blocks = index.workers.get(workerId)
  if (blocks === undefined) {
    blocks = new Map()
    index.workers.set(workerId, blocks)
  }
  dropExpired(blocks, now, maxAgeMs)
  // A chain longer than the bound keeps its first blocks: those are the ones a match walks through.
  const last = Math.min(chain.hashes.length, maxBlocksPerWorker) - 1
  for (let i = last; i >= 0; i--) {
    const hash = chain.hashes[i] as number
    blocks.delete(hash)
    blocks.set(hash, now)
  }
  for (const hash of blocks.keys()) {
    if (blocks.size <= maxBlocksPerWorker) break
    blocks.delete(hash)
  }
}

/** Blocks of `chain`, from its start, that `workerId` was recently sent. */
const matchBlocks = (index: PrefixIndex, workerId: string, chain: PromptChain, now: number): number => {
  const blocks = index.workers.get(workerId)
  if (blocks === undefined) return 0
  let n = 0
  for (const hash of chain.hashes) {
    const at = blocks.get(hash)
    if (at === undefined || now - at > index.limits.maxAgeMs) break
    n++
  }
  return n
}

/** Length, in approximate tokens, of the longest prefix of `chain` that `workerId` was recently sent. */
export const matchTokens = (index: PrefixIndex, workerId: string, chain: PromptChain, now: number): number =>
  matchBlocks(index, workerId, chain, now) * chain.blockTokens

/** Forgets `workerId` (gone, offline, restarted: its cache is gone too). */
export const forgetWorker = (index: PrefixIndex, workerId: string): void => {
  index.workers.delete(workerId)
  index.dispatches.delete(workerId)
}

/** Forgets every worker not in `keep`. */
export const retainWorkers = (index: PrefixIndex, keep: ReadonlySet<string>): void => {
  for (const workerId of index.workers.keys()) if (!keep.has(workerId)) index.workers.delete(workerId)
  for (const workerId of index.dispatches.keys()) if (!keep.has(workerId)) index.dispatches.delete(workerId)
}

/** Entries held, over all workers: the index's memory, in block hashes. */
export const indexEntries = (index: PrefixIndex): number => {
  let n = 0
  for (const blocks of index.workers.values()) n += blocks.size
  return n
}

// ---------------------------------------------------------------------------------------------
// The choice

export interface AffinityChoiceSettings {
  /** A shorter match is no reason to prefer a worker. */
  readonly minPrefixTokens: number
  /**
   * How many more requests than the least loaded candidate a worker may have in flight and still
   * win by affinity. Absolute, in requests, not a ratio: loads here are small integers (a Mac runs
   * a handful of requests at once), where a ratio is useless (1 vs 0 is "infinitely" imbalanced,
   * 9 vs 6 is fine); an absolute margin bounds how far affinity can pile work onto one worker, which
   * is what keeps the total requests per worker even.
   */
  readonly maxImbalance: number
}

/**
 * `affinity`: the kept workers share the longest match, at least `minPrefixTokens`;
 * `no_prefix`: no worker within the margin holds that much of the prompt;
 * `imbalanced`: a worker holds enough of it, but every such worker is past the load margin.
 */
export type AffinityOutcome = "affinity" | "no_prefix" | "imbalanced"

export interface AffinityChoice<W> {
  /** The candidates the next steps (least load, priority, round robin) choose among. */
  readonly workers: ReadonlyArray<W>
  readonly outcome: AffinityOutcome
  /** The longest match among the kept workers when `affinity`, else 0. */
  readonly matchTokens: number
}

/**
 * Prefix affinity among `candidates` (non-empty), the step between memory fit and least load:
 *
 * 1. workers whose load exceeds the least loaded candidate's by more than `maxImbalance` are out
 *    of the running (for affinity; the next steps still see every candidate);
 * 2. among the others, the longest match wins: every worker with that match is kept, if it is at
 *    least `minPrefixTokens`, and least load then breaks ties between them;
 * 3. otherwise every candidate is kept, and least load decides.
 *
 * So a conversation stays on its worker while that worker is within the margin; when it is not,
 * the conversation goes to the best-matching worker within the margin (often one holding its
 * system prompt), else to the least loaded.
 */
export const preferByAffinity = <W>(
  candidates: ReadonlyArray<W>,
  loadOf: (w: W) => number,
  matchOf: (w: W) => number,
  settings: AffinityChoiceSettings
): AffinityChoice<W> => {
  const minLoad = Math.min(...candidates.map(loadOf))
  const withinMargin = candidates.filter((w) => loadOf(w) - minLoad <= settings.maxImbalance)
  const threshold = Math.max(1, settings.minPrefixTokens)
  const best = Math.max(0, ...withinMargin.map(matchOf))
  if (best >= threshold) {
    return { workers: withinMargin.filter((w) => matchOf(w) === best), outcome: "affinity", matchTokens: best }
  }
  const outcome = candidates.some((w) => matchOf(w) >= threshold) ? "imbalanced" : "no_prefix"
  return { workers: candidates, outcome, matchTokens: 0 }
}

/** What `selectWorker` needs for the affinity step: each worker's match, and the rule's settings. */
export interface AffinityInput {
  /** Tokens of the request's prompt each worker holds (absent: 0). */
  readonly matches: ReadonlyMap<string, number>
  /**
   * Requests each worker was recently sent (`recentDispatches`; absent: 0): the last tie-break
   * before round robin. Among equally loaded workers, a prompt that nobody, or everybody, holds
   * (a new conversation) goes to the one sent the fewest. With users pausing between turns, the
   * requests in flight at one instant say little about how many conversations a worker already
   * has, and round robin is thrown off by the sticky choices in between; this keeps the requests
   * per worker even (in the closed-loop simulations, better than round robin or SGLang's
   * smallest-tree rule).
   */
  readonly recentDispatches: ReadonlyMap<string, number>
  readonly settings: AffinityChoiceSettings
}

/**
 * How a dispatch went for the prefix cache, given the tokens the chosen worker held and the most
 * any worker held: `hit` (the chosen worker held at least `minPrefixTokens`, and no worker more),
 * `displaced` (another worker held a longer prefix, of at least `minPrefixTokens`: the request lost
 * cache to load or to the strategy), `miss` (no worker held `minPrefixTokens`).
 */
export type DispatchResult = "hit" | "displaced" | "miss"

export const classifyDispatch = (chosenTokens: number, bestTokens: number, minPrefixTokens: number): DispatchResult => {
  const threshold = Math.max(1, minPrefixTokens)
  if (bestTokens > chosenTokens && bestTokens >= threshold) return "displaced"
  return chosenTokens >= threshold ? "hit" : "miss"
}

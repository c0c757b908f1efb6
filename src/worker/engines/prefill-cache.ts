import { Effect, Ref } from "effect"
import type { InferenceRequest } from "../../domain/inference.js"
import { commonBlocks, type PromptChain, promptChain, type PromptInput } from "../../domain/prompt-chain.js"
import type { PromptCacheStats } from "../../domain/worker.js"

/**
 * The synthetic engine's own prompt cache (issue 16): pure functions over an immutable value, and
 * at the end the small handle the engine holds it with. It is a model of mlx_lm.server's prompt
 * cache, so that cache-aware routing is measurable without weights.
 *
 * - It holds the `capacity` most recently used prompts as chains (src/domain/prompt-chain.ts) of
 *   one word per block, most recent first. A prompt's cached part is its longest common word prefix
 *   with any held prompt, as mlx_lm.server reuses the exact common token prefix of its cache (vLLM
 *   would round down to its 16-token pages); the rest must be prefilled. The controller hashes
 *   coarser blocks (`block_tokens`): the two never compare hashes.
 * - After a generation the engine stores the prompt *with its answer* (as an `assistant` message,
 *   or appended to a raw prompt): a KV cache holds the generated tokens too, so the next turn of a
 *   chat, which repeats that answer, finds it cached.
 * - A stored chain replaces the held chains that are a prefix of it (they add nothing); beyond
 *   `capacity` the least recently used one is dropped.
 * - Counters: a request is a *hit* when any of its prompt was cached, a *miss* otherwise; token
 *   counters give the fraction of prompt tokens served from cache, the rate vLLM and SGLang report.
 *
 * Concurrent prefills do not slow each other down (a Mac's GPU would serialise them), which makes
 * the model kinder to cold workers than a real Mac is.
 */

export interface PrefillCache {
  readonly capacity: number
  /** Most recently used first. */
  readonly chains: ReadonlyArray<PromptChain>
  readonly stats: PromptCacheStats
}

export const emptyPrefillCache = (capacity: number): PrefillCache => ({
  capacity: Math.max(0, Math.floor(capacity)),
  chains: [],
  stats: { hits: 0, misses: 0, cachedTokens: 0, promptTokens: 0 }
})

/** Words of `chain` served from `cache`: its longest prefix of full blocks held there. */
export const cachedTokens = (cache: PrefillCache, chain: PromptChain): number => {
  let best = 0
  for (const held of cache.chains) best = Math.max(best, commonBlocks(held, chain))
  return Math.min(chain.tokens, best * chain.blockTokens)
}

const isPrefixOf = (held: PromptChain, chain: PromptChain): boolean =>
  held.hashes.length <= chain.hashes.length && commonBlocks(held, chain) === held.hashes.length

/** Stores `chain` as the most recently used prompt. */
export const storePrompt = (cache: PrefillCache, chain: PromptChain): PrefillCache => {
  if (cache.capacity === 0 || chain.hashes.length === 0) return cache
  const others = cache.chains.filter((held) => !isPrefixOf(held, chain))
  return { ...cache, chains: [chain, ...others].slice(0, cache.capacity) }
}

export interface Prefill {
  /** Prompt words found in the cache. */
  readonly cachedTokens: number
  /** Prompt words to compute. */
  readonly uncachedTokens: number
}

/** Looks `chain` up, counts the hit or miss, and stores it (a prefill leaves the prompt cached). */
export const prefill = (cache: PrefillCache, chain: PromptChain): readonly [Prefill, PrefillCache] => {
  const cached = cachedTokens(cache, chain)
  const s = cache.stats
  const stats: PromptCacheStats = {
    hits: s.hits + (cached > 0 ? 1 : 0),
    misses: s.misses + (cached > 0 ? 0 : 1),
    cachedTokens: s.cachedTokens + cached,
    promptTokens: s.promptTokens + chain.tokens
  }
  return [{ cachedTokens: cached, uncachedTokens: chain.tokens - cached }, storePrompt({ ...cache, stats }, chain)]
}

/** The prefill time of `uncachedTokens` at `tokensPerSecond` (0 or less: prefill is free), in ms. */
export const prefillDelayMs = (uncachedTokens: number, tokensPerSecond: number): number =>
  tokensPerSecond > 0 ? (uncachedTokens * 1000) / tokensPerSecond : 0

// ---------------------------------------------------------------------------------------------
// The engine's handle on its cache

export interface PrefillOptions {
  /** 0: prefill is free (the cache still counts). */
  readonly prefillTokensPerSecond?: number | undefined
  /** Prompts held; default 10. */
  readonly promptCacheSize?: number | undefined
}

export interface EnginePrefillCache {
  /** Looks `request`'s prompt up, counts it and stores it: the prefill delay in ms. */
  readonly begin: (request: InferenceRequest) => Effect.Effect<number>
  /** Stores `request`'s prompt followed by the generated `answer`. */
  readonly complete: (request: InferenceRequest, answer: string) => Effect.Effect<void>
  readonly stats: Effect.Effect<PromptCacheStats>
}

export const DEFAULT_PROMPT_CACHE_SIZE = 10
/** Words per block of the engine's chains: 1, an exact common prefix. */
export const ENGINE_BLOCK_TOKENS = 1

/** The prompt followed by its answer, as the next turn of a chat (or a continued prompt) repeats it. */
export const withAnswer = (request: InferenceRequest, answer: string): PromptInput =>
  request.messages !== undefined && request.prompt === undefined
    ? { model: request.model, messages: [...request.messages, { role: "assistant", content: answer }] }
    : { model: request.model, messages: request.messages, prompt: `${request.prompt ?? ""} ${answer}` }

/** One engine's prompt cache, held in a `Ref` (the engine is built synchronously). */
export const makeEnginePrefillCache = (options: PrefillOptions): EnginePrefillCache => {
  const ref = Ref.unsafeMake(emptyPrefillCache(options.promptCacheSize ?? DEFAULT_PROMPT_CACHE_SIZE))
  const rate = options.prefillTokensPerSecond ?? 0
  return {
    begin: (request) =>
      Ref.modify(ref, (cache) => prefill(cache, promptChain(request, ENGINE_BLOCK_TOKENS))).pipe(
        Effect.map((p) => prefillDelayMs(p.uncachedTokens, rate))
      ),
    complete: (request, answer) =>
      Ref.update(ref, (cache) => storePrompt(cache, promptChain(withAnswer(request, answer), ENGINE_BLOCK_TOKENS))),
    stats: Effect.map(Ref.get(ref), (cache) => cache.stats)
  }
}

import { Clock, Effect, Layer } from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import type { FinishReason, InferenceRequest } from "../../domain/inference.js"
import { countPromptTokens, finish, InferenceEngine, type InferenceEngineService } from "./inference-engine.js"
import { type EnginePrefillCache, makeEnginePrefillCache, type PrefillOptions } from "./prefill-cache.js"

/**
 * The `synthetic` engine: no model weights, deterministic text for tests, demos and benchmarks.
 *
 * - Same request (model + messages/prompt + maxTokens + stop) → same tokens: words of a fixed
 *   vocabulary drawn by a PRNG seeded with an FNV-1a hash of the model and the prompt.
 * - The answer's natural length is 32..256 tokens (from the hash; `max_answer_tokens` raises the
 *   256, e.g. for long-stream tests); it ends there with `stop`, at
 *   `maxTokens` with `length`, or before the first stop sequence with `stop` (the text before the
 *   sequence is sent, the sequence is not).
 * - Prompt tokens are the whitespace-separated words of all messages; completion tokens are the
 *   token pieces sent.
 * - Pacing: the first token after `first_token_ms`, then `tokens_per_second` (drift-free, on the
 *   Effect clock so TestClock drives it). `tokens_per_second: 0` emits groups of 32 tokens without
 *   sleeping, yielding to the event loop between groups so that a cancel can land.
 * - Prefill (issue 16): the first token comes later by the prompt's words missing from the
 *   engine's own prompt cache / `prefill_tokens_per_second` (src/worker/engines/prefill-cache.ts).
 * - Continuation (issue 13): a request with a `continuation` gets the rest of the very answer the
 *   request would have had — the same plan without its first `completionTokens` tokens — so a
 *   stream moved from a lost worker goes on word for word.
 * - A paced engine stopped for longer than `MAX_CATCH_UP_MS` (SIGSTOP) resumes at its pace instead
 *   of sending at once everything that came due while it was stopped.
 */

export interface SyntheticOptions extends PrefillOptions {
  readonly tokensPerSecond: number
  readonly firstTokenMs: number
  /** The longest natural answer (its length is drawn from 32..this); default 256. */
  readonly maxAnswerTokens?: number | undefined
}

const VOCABULARY = [
  "the", "cluster", "answers", "with", "synthetic", "words", "from", "a", "small", "fixed", "list", "so",
  "every", "request", "gets", "the", "same", "reply", "model", "worker", "controller", "token", "stream",
  "apple", "silicon", "memory", "unified", "fast", "quiet", "room", "of", "machines", "serving", "one",
  "endpoint", "through", "messages", "and", "subjects", "in", "order", "until", "done", "light", "river",
  "mountain", "garden", "signal", "bright", "calm", "window", "paper", "orbit", "harbor", "meadow", "echo",
  "lantern", "field", "stone", "cloud", "north", "amber", "violet", "silver"
] as const

export const MIN_NATURAL_TOKENS = 32
export const MAX_NATURAL_TOKENS = 256
const YIELD_EVERY = 32

/** FNV-1a, 32 bits. */
export const fnv1a = (text: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** mulberry32: a tiny seeded PRNG giving floats in [0, 1). */
export const prng = (seed: number) => {
  let a = seed >>> 0
  return (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface SyntheticPlan {
  readonly tokens: ReadonlyArray<string>
  readonly finishReason: FinishReason
  readonly promptTokens: number
}

const seedOf = (request: InferenceRequest): number =>
  fnv1a(`${request.model}\u0000${JSON.stringify(request.messages ?? [])}\u0000${request.prompt ?? ""}`)

/** The natural answer for a request, before maxTokens and stop sequences. */
export const naturalLength = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): number =>
  MIN_NATURAL_TOKENS + (seedOf(request) % (Math.max(MIN_NATURAL_TOKENS, maxAnswerTokens) - MIN_NATURAL_TOKENS + 1))

/** The first `limit` words of the natural answer (all of them by default). */
export const naturalAnswer = (
  request: InferenceRequest,
  maxAnswerTokens = MAX_NATURAL_TOKENS,
  limit = Number.POSITIVE_INFINITY
): ReadonlyArray<string> => {
  const seed = seedOf(request)
  const length = naturalLength(request, maxAnswerTokens)
  const next = prng(seed)
  const words: Array<string> = []
  let sentenceLeft = 0
  for (let i = 0; i < Math.min(length, limit); i++) {
    const word = VOCABULARY[Math.floor(next() * VOCABULARY.length)] ?? "the"
    const startsSentence = sentenceLeft === 0
    if (startsSentence) sentenceLeft = 5 + Math.floor(next() * 10)
    sentenceLeft--
    const text = startsSentence ? word.charAt(0).toUpperCase() + word.slice(1) : word
    const last = i === length - 1
    words.push(`${i === 0 ? "" : " "}${text}${sentenceLeft === 0 || last ? "." : ""}`)
  }
  return words
}

/** The tokens a request gets: the natural answer cut by `maxTokens` and the stop sequences. */
export const planSynthetic = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): SyntheticPlan => {
  const length = naturalLength(request, maxAnswerTokens)
  const promptTokens = countPromptTokens(request)
  const maxTokens = request.maxTokens ?? length
  const limited = naturalAnswer(request, maxAnswerTokens, maxTokens)
  const lengthReason: FinishReason = length > maxTokens ? "length" : "stop"
  const stops = (request.stop ?? []).filter((s) => s.length > 0)
  if (stops.length === 0) return { tokens: limited, finishReason: lengthReason, promptTokens }
  const text = limited.join("")
  const cut = stops.reduce((min, stop) => {
    const at = text.indexOf(stop)
    return at >= 0 && (min < 0 || at < min) ? at : min
  }, -1)
  if (cut < 0) return { tokens: limited, finishReason: lengthReason, promptTokens }
  const tokens: Array<string> = []
  let offset = 0
  for (const token of limited) {
    if (offset >= cut) break
    const kept = token.slice(0, cut - offset)
    if (kept.length > 0) tokens.push(kept)
    offset += token.length
  }
  return { tokens, finishReason: "stop", promptTokens }
}

/**
 * The plan of a continued request (issue 13): the plan of the whole request — the same text, as
 * `maxTokens` there counted the tokens already sent too — without its first
 * `continuation.completionTokens` tokens. Prompt tokens are the request's own, not the continuation's.
 */
export const planContinuation = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): SyntheticPlan => {
  const { continuation, ...rest } = request
  if (continuation === undefined) return planSynthetic(request, maxAnswerTokens)
  const sent = continuation.completionTokens
  const whole = planSynthetic(rest.maxTokens === undefined ? rest : { ...rest, maxTokens: rest.maxTokens + sent }, maxAnswerTokens)
  return { ...whole, tokens: whole.tokens.slice(sent) }
}

/**
 * How far behind its schedule a paced engine catches up in one batch. A later wake-up (the process
 * was stopped, SIGSTOP) counts as a pause: a real engine does not generate while stopped, so the
 * schedule moves on from now instead of sending everything that came due meanwhile at once.
 */
export const MAX_CATCH_UP_MS = 1_000

/** A real macrotask boundary: lets I/O (a cancel arriving over NATS) run. Independent of the clock. */
const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** `promptCache`: the engine's own prompt cache (a new, empty one by default). */
export const makeSyntheticEngine = (
  options: SyntheticOptions,
  promptCache: EnginePrefillCache = makeEnginePrefillCache(options)
): InferenceEngineService => ({
  type: "synthetic",
  promptCache: promptCache.stats,
  // Deterministic text: any worker can produce the rest of another one's answer (issue 13).
  continuation: ["chat", "completions"],
  generate: (request, _modelPath, emit) =>
    Effect.gen(function* () {
      const plan = planContinuation(request, options.maxAnswerTokens)
      const done = finish(plan.finishReason, { promptTokens: plan.promptTokens, completionTokens: plan.tokens.length })
      const start = yield* Clock.currentTimeMillis
      // Prefill: the uncached part of the prompt delays the first token; the answer joins the cache at the end.
      const firstTokenMs = options.firstTokenMs + (yield* promptCache.begin(request))
      const remember = promptCache.complete(request, plan.tokens.join(""))
      if (firstTokenMs > 0) yield* Effect.sleep(firstTokenMs)
      if (options.tokensPerSecond <= 0) {
        // As fast as the machine allows, in groups, with a real event-loop turn between groups so
        // that a cancel (or a probe) can land.
        for (let i = 0; i < plan.tokens.length; i += YIELD_EVERY) {
          if (i > 0) yield* yieldToEventLoop
          emit(plan.tokens.slice(i, i + YIELD_EVERY))
        }
        yield* remember
        return done
      }
      // Paced, drift-free: token i is due at origin + i × interval (origin = start + first_token_ms);
      // whatever is due when the engine wakes goes out at once (a late wake-up sends the overdue
      // tokens together), unless the wake-up is more than MAX_CATCH_UP_MS late: then the engine was
      // stopped, and the schedule resumes from now.
      const interval = 1000 / options.tokensPerSecond
      let origin = start + firstTokenMs
      let sent = 0
      while (sent < plan.tokens.length) {
        const now = yield* Clock.currentTimeMillis
        if (now - (origin + sent * interval) > MAX_CATCH_UP_MS) origin = now - sent * interval
        const due = Math.min(plan.tokens.length, Math.floor((now - origin) / interval) + 1)
        if (due > sent) {
          emit(plan.tokens.slice(sent, due))
          sent = due
        } else {
          yield* Effect.sleep(Math.max(1, Math.ceil(origin + sent * interval - now)))
        }
      }
      yield* remember
      return done
    })
})

/** The synthetic engine with `worker.engine.synthetic` from the config. */
export const SyntheticEngineLive: Layer.Layer<InferenceEngine, never, ClusterConfigService> = Layer.effect(
  InferenceEngine,
  Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const options = config.worker.engine.synthetic
    yield* Effect.logInfo(
      `inference engine: synthetic (generated text, no model weights; ${options.tokensPerSecond || "unlimited"} tokens/s, first token after ${options.firstTokenMs} ms` +
        `${options.prefillTokensPerSecond > 0 ? ` + prefill at ${options.prefillTokensPerSecond} tokens/s, ${options.promptCacheSize} prompts cached` : ""})`
    )
    return makeSyntheticEngine(options)
  })
)

export const syntheticEngineLayer = (options: SyntheticOptions): Layer.Layer<InferenceEngine> =>
  Layer.succeed(InferenceEngine, makeSyntheticEngine(options))

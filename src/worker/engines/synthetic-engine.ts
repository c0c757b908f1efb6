import { Clock, Effect, Layer } from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import { FEATURES } from "../../domain/features.js"
import { countPromptTokens, type FinishReason, type InferenceRequest, type TokenLogprob, type ToolCallDelta, type TopLogprob } from "../../domain/inference.js"
import { type EmitTokens, type EmitToolCalls, type Finish, finish, InferenceEngine, type InferenceEngineService } from "./inference-engine.js"
import { type EnginePrefillCache, makeEnginePrefillCache, type PrefillOptions } from "./prefill-cache.js"
import { exampleFromSchema } from "./schema-example.js"

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
 *   request would have had — the same plan without its first `completionTokens` pieces — so a
 *   stream moved from a lost worker goes on word for word.
 * - A paced engine stopped for longer than `MAX_CATCH_UP_MS` (SIGSTOP) resumes at its pace instead
 *   of sending at once everything that came due while it was stopped.
 *
 * A full double of an OpenAI-compatible model (issue 12), so that every feature is tested without
 * weights; it honours every feature of src/domain/features.ts:
 * - `tools`: a deterministic call of the chosen tool (`tool_choice` by name, `required`: the first;
 *   `auto`: the first, unless the conversation ends with a tool result, which it answers in text),
 *   arguments generated from the tool's JSON schema (`schema-example.ts`), streamed as OpenAI
 *   streams them (a delta with id and name, then argument pieces), `finish_reason: tool_calls`.
 *   One call per answer (`parallel_tool_calls` never makes more).
 * - `response_format`: `json_object` → `{"answer": "..."}`; `json_schema` → a value matching the
 *   schema; as JSON text in pieces of 6 characters.
 * - `logprobs` (chat: `logprobs` + `top_logprobs`; completions: `logprobs: N`): one deterministic
 *   entry per token, the token itself first among its `top_logprobs`.
 * - `seed` and `suffix` join the hash: the same seed gives the same text, another seed another.
 * - `presence_penalty`/`frequency_penalty` > 0 avoid words already used; < 0 repeat words.
 *   `logit_bias`: token ids are positions in the vocabulary; -100 bans a word, 100 forces it.
 * - `echo` (completions): the prompt's words come first (not counted as completion tokens).
 * - Content parts other than text are part of the prompt the hash sees.
 * - `system_fingerprint` is `fp_synthetic`.
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
/** Tokens per group at `tokens_per_second: 0` (the benchmark's floor and bare relay send the same groups). */
export const YIELD_EVERY = 32
/** The `system_fingerprint` of every synthetic answer. */
export const SYSTEM_FINGERPRINT = "fp_synthetic"

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
  /** Text pieces, one per token (empty when the answer is a tool call). */
  readonly tokens: ReadonlyArray<string>
  readonly finishReason: FinishReason
  readonly promptTokens: number
  /** With `logprobs` asked for: one entry per token. */
  readonly logprobs?: ReadonlyArray<TokenLogprob>
  /** A tool call, as OpenAI streams it: one delta per piece (the first names the function). */
  readonly toolCalls?: ReadonlyArray<ToolCallDelta>
  /** Tokens that only echo the prompt (`echo: true`): sent first, not counted as completion tokens. */
  readonly echoed?: number
}

const params = (request: InferenceRequest): Readonly<Record<string, unknown>> => request.params ?? {}

const seedOf = (request: InferenceRequest): number => {
  const p = params(request)
  // Only what should change the text: the prompt, a `seed`, a `suffix`. Same request, same text.
  const extra = p["seed"] === undefined && p["suffix"] === undefined ? "" : `\u0000${JSON.stringify([p["seed"] ?? null, p["suffix"] ?? null])}`
  return fnv1a(`${request.model}\u0000${JSON.stringify(request.messages ?? [])}\u0000${request.prompt ?? ""}${extra}`)
}

/** How sampling is steered: words banned or forced by `logit_bias`, repeats discouraged or encouraged by the penalties. */
interface Steering {
  readonly banned: ReadonlySet<string>
  readonly forced: string | undefined
  /** > 0: avoid words already used; < 0: repeat the previous word half of the time. */
  readonly penalty: number
}

/**
 * The synthetic engine's token ids are positions in its vocabulary: `logit_bias` `{"3": -100}` bans
 * `VOCABULARY[3]`, a bias of 100 makes a word the only choice.
 */
const steeringOf = (request: InferenceRequest): Steering => {
  const p = params(request)
  const banned = new Set<string>()
  let forced: string | undefined
  const bias = p["logit_bias"]
  if (typeof bias === "object" && bias !== null) {
    for (const [id, value] of Object.entries(bias as Record<string, unknown>)) {
      const word = VOCABULARY[Number(id)]
      if (word === undefined || typeof value !== "number") continue
      if (value <= -100) banned.add(word)
      else if (value >= 100) forced = word
    }
  }
  const number = (u: unknown) => (typeof u === "number" ? u : 0)
  return { banned, forced, penalty: number(p["presence_penalty"]) + number(p["frequency_penalty"]) }
}

const NO_STEERING: Steering = { banned: new Set(), forced: undefined, penalty: 0 }

const pickWord = (next: () => number, steering: Steering, used: ReadonlySet<string>, previous: string | undefined): string => {
  if (steering.forced !== undefined) return steering.forced
  if (steering.penalty < 0 && previous !== undefined && next() < 0.5) return previous
  for (let attempt = 0; ; attempt++) {
    const word = VOCABULARY[Math.floor(next() * VOCABULARY.length)] ?? "the"
    if (steering.banned.has(word) && attempt < 64) continue
    if (steering.penalty > 0 && used.has(word) && attempt < 8) continue
    return word
  }
}

/** Words in sentences: the synthetic text of `length` tokens drawn from `next`. */
const sentences = (length: number, next: () => number, steering: Steering = NO_STEERING): Array<string> => {
  const words: Array<string> = []
  const used = new Set<string>()
  let previous: string | undefined
  let sentenceLeft = 0
  for (let i = 0; i < length; i++) {
    const word = pickWord(next, steering, used, previous)
    used.add(word)
    previous = word
    const startsSentence = sentenceLeft === 0
    if (startsSentence) sentenceLeft = 5 + Math.floor(next() * 10)
    sentenceLeft--
    const text = startsSentence ? word.charAt(0).toUpperCase() + word.slice(1) : word
    const last = i === length - 1
    words.push(`${i === 0 ? "" : " "}${text}${sentenceLeft === 0 || last ? "." : ""}`)
  }
  return words
}

/** The natural answer for a request, before maxTokens and stop sequences. */
export const naturalAnswer = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): ReadonlyArray<string> => {
  // The hash once: it serialises every message.
  const seed = seedOf(request)
  return sentences(naturalLength(seed, maxAnswerTokens), prng(seed), steeringOf(request))
}

/** The natural answer's length in tokens: 32..`maxAnswerTokens`, from the request's hash. */
const naturalLength = (seed: number, maxAnswerTokens: number): number =>
  MIN_NATURAL_TOKENS + (seed % (Math.max(MIN_NATURAL_TOKENS, maxAnswerTokens) - MIN_NATURAL_TOKENS + 1))

/** JSON text as tokens: pieces of at most 6 characters, so that it streams like a model's output. */
const jsonTokens = (text: string): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < text.length; i += 6) out.push(text.slice(i, i + 6))
  return out
}

const exampleSource = (seed: number) => ({ next: prng(seed), words: VOCABULARY })

/** `response_format`: the answer as JSON text (an object; for `json_schema`, one matching the schema), or none. */
const structuredAnswer = (request: InferenceRequest): ReadonlyArray<string> | undefined => {
  const format = params(request)["response_format"]
  if (typeof format !== "object" || format === null) return undefined
  const f = format as { readonly type?: unknown; readonly json_schema?: { readonly schema?: unknown } }
  const seed = seedOf(request)
  if (f.type === "json_object") return jsonTokens(JSON.stringify({ answer: naturalAnswer(request).slice(0, 12).join("") }))
  if (f.type === "json_schema") return jsonTokens(JSON.stringify(exampleFromSchema(f.json_schema?.schema ?? {}, exampleSource(seed))))
  return undefined
}

interface ToolDefinition {
  readonly name: string
  readonly parameters: unknown
}

const toolsOf = (request: InferenceRequest): ReadonlyArray<ToolDefinition> => {
  const tools = params(request)["tools"]
  if (!Array.isArray(tools)) return []
  return tools.flatMap((tool: unknown): Array<ToolDefinition> => {
    const fn = typeof tool === "object" && tool !== null ? (tool as { function?: { name?: unknown; parameters?: unknown } }).function : undefined
    return typeof fn?.name === "string" ? [{ name: fn.name, parameters: fn.parameters }] : []
  })
}

/**
 * The tool to call, or none: `tool_choice` `"none"` calls none; `"required"` the first tool; a named
 * function that one; `"auto"` (the default with tools) the first tool, unless the conversation
 * ends with a tool's result — then the model answers in text, as a real one would.
 */
const chosenTool = (request: InferenceRequest): ToolDefinition | undefined => {
  const tools = toolsOf(request)
  if (tools.length === 0 || request.messages === undefined) return undefined
  const choice = params(request)["tool_choice"]
  if (choice === "none") return undefined
  if (typeof choice === "object" && choice !== null) {
    const name = (choice as { function?: { name?: unknown } }).function?.name
    return tools.find((t) => t.name === name) ?? tools[0]
  }
  if (choice === "required") return tools[0]
  const last = request.messages[request.messages.length - 1]
  return last?.role === "tool" || last?.role === "function" ? undefined : tools[0]
}

/** A call of `tool` with arguments generated from its parameters' schema, streamed as OpenAI streams one. */
const toolCallDeltas = (request: InferenceRequest, tool: ToolDefinition): ReadonlyArray<ToolCallDelta> => {
  const seed = seedOf(request)
  const schema = typeof tool.parameters === "object" && tool.parameters !== null ? tool.parameters : {}
  const objectSchema = "type" in schema || "properties" in schema || "$ref" in schema || "anyOf" in schema ? schema : { ...schema, type: "object" }
  const args = JSON.stringify(exampleFromSchema(objectSchema, exampleSource(seed)))
  const id = `call_${seed.toString(16).padStart(8, "0")}${fnv1a(tool.name).toString(16).padStart(8, "0")}`
  return [
    { index: 0, id, type: "function", function: { name: tool.name, arguments: "" } },
    ...jsonTokens(args).map((piece): ToolCallDelta => ({ index: 0, function: { arguments: piece } }))
  ]
}

/** Deterministic log probabilities of `tokens`, with `top` alternatives each (the token itself first). */
const logprobsOf = (request: InferenceRequest, tokens: ReadonlyArray<string>, top: number): ReadonlyArray<TokenLogprob> => {
  const next = prng(seedOf(request) ^ 0x5bd1e995)
  const encoder = new TextEncoder()
  const round = (n: number) => Math.round(n * 1e4) / 1e4
  return tokens.map((token) => {
    const logprob = round(-next() * 2)
    // One byte list for the token's entry and its first alternative: both are the token.
    const bytes = [...encoder.encode(token)]
    const alternatives: Array<TopLogprob> = [{ token, logprob, bytes }]
    for (let k = 1; k < top; k++) {
      const word = ` ${VOCABULARY[Math.floor(next() * VOCABULARY.length)] ?? "the"}`
      alternatives.push({ token: word, logprob: round(logprob - 0.5 * k - next()), bytes: [...encoder.encode(word)] })
    }
    return { token, logprob, bytes, top_logprobs: top > 0 ? alternatives : [] }
  })
}

/** How many alternatives per token the request asks for, or undefined when it asks for no logprobs. */
const logprobsAsked = (request: InferenceRequest): number | undefined => {
  const p = params(request)
  const completions = request.endpoint === "completions" || (request.endpoint === undefined && request.messages === undefined)
  if (completions) return typeof p["logprobs"] === "number" ? p["logprobs"] : undefined
  if (p["logprobs"] !== true) return undefined
  return typeof p["top_logprobs"] === "number" ? p["top_logprobs"] : 0
}

/** Cuts `tokens` before the first stop sequence: the kept tokens, or undefined when none occurs. */
const cutAtStop = (tokens: ReadonlyArray<string>, stops: ReadonlyArray<string>): Array<string> | undefined => {
  if (stops.length === 0) return undefined
  const text = tokens.join("")
  const cut = stops.reduce((min, stop) => {
    const at = text.indexOf(stop)
    return at >= 0 && (min < 0 || at < min) ? at : min
  }, -1)
  if (cut < 0) return undefined
  const kept: Array<string> = []
  let offset = 0
  for (const token of tokens) {
    if (offset >= cut) break
    const piece = token.slice(0, cut - offset)
    if (piece.length > 0) kept.push(piece)
    offset += token.length
  }
  return kept
}

/**
 * What a request gets: a tool call (`tools`), JSON (`response_format`) or the natural answer; cut
 * by `maxTokens` and the stop sequences; with log probabilities and the echoed prompt when asked.
 */
export const planSynthetic = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): SyntheticPlan => {
  const promptTokens = countPromptTokens(request)
  const tool = chosenTool(request)
  if (tool !== undefined) {
    const deltas = toolCallDeltas(request, tool)
    const limit = request.maxTokens ?? deltas.length
    return {
      tokens: [],
      toolCalls: deltas.slice(0, limit),
      finishReason: deltas.length > limit ? "length" : "tool_calls",
      promptTokens
    }
  }
  const natural = structuredAnswer(request) ?? naturalAnswer(request, maxAnswerTokens)
  const maxTokens = request.maxTokens ?? natural.length
  const limited = natural.slice(0, maxTokens)
  const lengthReason: FinishReason = natural.length > maxTokens ? "length" : "stop"
  const stopped = cutAtStop(limited, (request.stop ?? []).filter((s) => s.length > 0))
  const generated = stopped ?? limited
  const finishReason: FinishReason = stopped !== undefined ? "stop" : lengthReason
  const echo = params(request)["echo"] === true && request.prompt !== undefined ? (request.prompt.match(/\s*\S+|\s+$/g) ?? []) : []
  const tokens = echo.length > 0 ? [...echo, ...generated] : generated
  const top = logprobsAsked(request)
  return {
    tokens,
    finishReason,
    promptTokens,
    ...(echo.length > 0 ? { echoed: echo.length } : {}),
    ...(top === undefined ? {} : { logprobs: logprobsOf(request, tokens, top) })
  }
}

/**
 * The plan of a continued request (issue 13): the plan of the whole request — the same text, as
 * `maxTokens` there counted the pieces already sent too — without its first
 * `continuation.completionTokens` pieces. Prompt tokens are the request's own, not the continuation's.
 */
export const planContinuation = (request: InferenceRequest, maxAnswerTokens = MAX_NATURAL_TOKENS): SyntheticPlan => {
  const { continuation, ...rest } = request
  if (continuation === undefined) return planSynthetic(request, maxAnswerTokens)
  const sent = continuation.completionTokens
  const whole = planSynthetic(rest.maxTokens === undefined ? rest : { ...rest, maxTokens: rest.maxTokens + sent }, maxAnswerTokens)
  return {
    ...whole,
    tokens: whole.tokens.slice(sent),
    ...(whole.toolCalls === undefined ? {} : { toolCalls: whole.toolCalls.slice(sent) }),
    ...(whole.logprobs === undefined ? {} : { logprobs: whole.logprobs.slice(sent) }),
    ...(whole.echoed === undefined ? {} : { echoed: Math.max(0, whole.echoed - sent) })
  }
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

/** The synthetic engine honours every feature: it is the double every capability is tested with. */
export const SYNTHETIC_FEATURES = FEATURES

/** `promptCache`: the engine's own prompt cache (a new, empty one by default). */
export const makeSyntheticEngine = (
  options: SyntheticOptions,
  promptCache: EnginePrefillCache = makeEnginePrefillCache(options)
): InferenceEngineService => {
  /**
   * Paced, drift-free: token i is due at origin + i × interval (origin = `firstTokenAt`);
   * whatever is due when the engine wakes goes out at once (a late wake-up sends the overdue
   * tokens together), unless the wake-up is more than MAX_CATCH_UP_MS late: then the engine was
   * stopped, and the schedule resumes from now. Made once per engine (see `generate`).
   */
  const paced = Effect.fnUntraced(function* (count: number, send: (from: number, to: number) => void, firstTokenAt: number) {
    const interval = 1000 / options.tokensPerSecond
    let sent = 0
    let origin = firstTokenAt
    while (sent < count) {
      const now = yield* Clock.currentTimeMillis
      if (now - (origin + sent * interval) > MAX_CATCH_UP_MS) origin = now - sent * interval
      const due = Math.min(count, Math.floor((now - origin) / interval) + 1)
      if (due > sent) {
        send(sent, due)
        sent = due
      } else {
        yield* Effect.sleep(Math.max(1, Math.ceil(origin + sent * interval - now)))
      }
    }
  })

  /**
   * As fast as the machine allows, in groups, with a real event-loop turn between groups so that
   * a cancel (or a probe) can land: a group costs no Effect beyond that turn.
   */
  const unpaced = (count: number, send: (from: number, to: number) => void, from: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      send(from, from + YIELD_EVERY)
      const next = from + YIELD_EVERY
      return next >= count ? Effect.void : Effect.zipRight(yieldToEventLoop, unpaced(count, send, next))
    })

  /**
   * Made once per engine, not per request, and continuations rather than a generator, as the
   * request path of controller/router.ts (see the note on `runAttempt` there): an unpaced request
   * costs a handful of Effects (the prompt cache's look-up and store) and one per group.
   */
  const generate = (request: InferenceRequest, _modelPath: string, emit: EmitTokens, emitToolCalls: EmitToolCalls): Effect.Effect<Finish> =>
    Effect.suspend(() => {
      const plan = planContinuation(request, options.maxAnswerTokens)
      const toolCalls = plan.toolCalls
      // Pieces in order: text tokens, or the deltas of a tool call; each one index on the wire.
      const count = toolCalls?.length ?? plan.tokens.length
      const send = (from: number, to: number) => {
        if (toolCalls !== undefined) return emitToolCalls(toolCalls.slice(from, to))
        emit(plan.tokens.slice(from, to), plan.logprobs?.slice(from, to))
      }
      const done = finish(plan.finishReason, { promptTokens: plan.promptTokens, completionTokens: count - (plan.echoed ?? 0) }, SYSTEM_FINGERPRINT)
      // The answer joins the cache at the end.
      const remember = Effect.as(promptCache.complete(request, plan.tokens.join("")), done)
      return Effect.flatMap(promptCache.begin(request), (prefillMs) => {
        // Prefill: the uncached part of the prompt delays the first token.
        const firstTokenMs = options.firstTokenMs + prefillMs
        const afterFirst = (tokens: Effect.Effect<void>) =>
          Effect.zipRight(firstTokenMs > 0 ? Effect.zipRight(Effect.sleep(firstTokenMs), tokens) : tokens, remember)
        if (options.tokensPerSecond <= 0) return afterFirst(count === 0 ? Effect.void : unpaced(count, send, 0))
        return Effect.flatMap(Clock.currentTimeMillis, (now) => afterFirst(paced(count, send, now + firstTokenMs)))
      })
    })
  return {
    type: "synthetic",
    features: SYNTHETIC_FEATURES,
    promptCache: promptCache.stats,
    // Deterministic text: any worker can produce the rest of another one's answer (issue 13).
    continuation: ["chat", "completions"],
    generate
  }
}

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

import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, TestClock } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { chainOfWords, promptChain, promptWords } from "../../../src/domain/prompt-chain.js"
import { InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import {
  cachedTokens,
  emptyPrefillCache,
  makeEnginePrefillCache,
  prefill,
  prefillDelayMs,
  storePrompt,
  withAnswer
} from "../../../src/worker/engines/prefill-cache.js"
import { makeSyntheticEngine, planSynthetic, SyntheticEngineLive } from "../../../src/worker/engines/synthetic-engine.js"
import { makeMetricsSampler, WorkerStats } from "../../../src/worker/worker-stats.js"
import { engineRequest, syntheticConfigLayer } from "../support/engine-fixtures.js"
import { runEngine, tokenRecorder } from "../support/run-engine.js"

const MODEL = "synthetic/demo"
const words = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`)
/** A chain of `blocks` blocks of 4 words starting with `shared` blocks of common words. */
const chain = (tag: string, blocks: number, shared = 0) =>
  chainOfWords(MODEL, [...words("shared", shared * 4), ...words(tag, (blocks - shared) * 4)], 4)

const request = (messages: InferenceRequest["messages"], over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: MODEL, messages, maxTokens: 8, ...over })

describe("the prefill cache (pure)", () => {
  it("a prompt's cached part is its longest run of leading blocks held in any stored prompt", () => {
    let cache = emptyPrefillCache(4)
    expect(cachedTokens(cache, chain("a", 5))).toBe(0)
    cache = storePrompt(cache, chain("a", 5, 2))
    cache = storePrompt(cache, chain("b", 3))
    expect(cachedTokens(cache, chain("a", 5, 2))).toBe(20)
    expect(cachedTokens(cache, chain("c", 6, 2))).toBe(8) // the shared part only
    expect(cachedTokens(cache, chain("b", 2))).toBe(8)
    // The partial tail is never cached: 10 words in blocks of 4 → at most 8 cached.
    const tail = chainOfWords(MODEL, words("t", 10), 4)
    expect(cachedTokens(storePrompt(cache, tail), tail)).toBe(8)
  })

  it("holds the K most recently used prompts; a stored extension replaces its prefixes", () => {
    let cache = emptyPrefillCache(2)
    cache = storePrompt(cache, chain("a", 3))
    cache = storePrompt(cache, chain("b", 3))
    cache = storePrompt(cache, chain("c", 3))
    expect(cachedTokens(cache, chain("a", 3))).toBe(0) // evicted
    expect(cache.chains).toHaveLength(2)
    // The next turn of "c" replaces "c" instead of pushing "b" out.
    const c2 = chainOfWords(MODEL, [...words("c", 12), ...words("more", 8)], 4)
    cache = storePrompt(cache, c2)
    expect(cache.chains).toEqual([c2, chain("b", 3)])
    expect(storePrompt(emptyPrefillCache(0), c2).chains).toEqual([])
    expect(storePrompt(cache, chain("x", 0)).chains).toEqual(cache.chains) // nothing to hold
  })

  it("prefill counts hits, misses and tokens, and leaves the prompt cached", () => {
    const [first, c1] = prefill(emptyPrefillCache(4), chain("a", 5))
    expect(first).toEqual({ cachedTokens: 0, uncachedTokens: 20 })
    const [second, c2] = prefill(c1, chain("a", 5))
    expect(second).toEqual({ cachedTokens: 20, uncachedTokens: 0 })
    expect(c2.stats).toEqual({ hits: 1, misses: 1, cachedTokens: 20, promptTokens: 40 })
  })

  it("prefill delay: uncached tokens / tokens per second; 0 when the rate is 0", () => {
    expect(prefillDelayMs(1000, 2000)).toBe(500)
    expect(prefillDelayMs(1000, 0)).toBe(0)
  })

  it("withAnswer: the next turn of a chat starts with the prompt and its answer", () => {
    const turn1 = [{ role: "user" as const, content: words("u", 30).join(" ") }]
    const answer = "Quiet river light. Amber stone"
    const turn2 = [...turn1, { role: "assistant" as const, content: answer }, { role: "user" as const, content: "more please" }]
    const stored = promptChain(withAnswer(request(turn1), answer))
    expect(promptChain({ model: MODEL, messages: turn2 }).hashes.slice(0, stored.hashes.length)).toEqual(stored.hashes)
    expect(promptWords(withAnswer(request(undefined, { prompt: "Once upon" }), "a time"))).toEqual(["Once", "upon", "a", "time"])
  })
})

describe("the synthetic engine's prefill", () => {
  const system = { role: "system" as const, content: words("s", 400).join(" ") }
  const turn1 = [system, { role: "user" as const, content: words("u", 40).join(" ") }]

  it.effect("the first token waits for the uncached prompt at prefill_tokens_per_second; the next turn is fast", () =>
    Effect.gen(function* () {
      const cache = makeEnginePrefillCache({ prefillTokensPerSecond: 1000, promptCacheSize: 4 })
      const engine = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 10 }, cache)
      // 442 prompt words (2 role markers), none cached: 442 ms of prefill + 10 ms.
      const first = yield* runEngine(engine, request(turn1)).pipe(Effect.fork)
      yield* TestClock.adjust("451 millis")
      expect(Option.isNone(yield* Fiber.poll(first))).toBe(true)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(first)
      // Turn 2 repeats turn 1 and its answer: only the new user message (and its role marker) is prefilled.
      const answer = planSynthetic(request(turn1)).tokens.join("")
      const turn2 = [...turn1, { role: "assistant" as const, content: answer }, { role: "user" as const, content: words("v", 30).join(" ") }]
      const prompt2 = promptChain({ model: MODEL, messages: turn2 })
      const cachedWords = 442 + 1 + answer.split(" ").length
      const expected = 10 + prompt2.tokens - cachedWords
      expect(expected).toBe(10 + 31)
      const second = yield* runEngine(engine, request(turn2)).pipe(Effect.fork)
      yield* TestClock.adjust(expected - 1)
      expect(Option.isNone(yield* Fiber.poll(second))).toBe(true)
      yield* TestClock.adjust(1)
      yield* Fiber.join(second)
      expect(yield* engine.promptCache ?? Effect.die("no prompt cache")).toEqual({
        hits: 1,
        misses: 1,
        cachedTokens: cachedWords,
        promptTokens: 442 + prompt2.tokens
      })
    })
  )

  it.effect("paced generation shifts every token by the prefill delay", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 0, prefillTokensPerSecond: 442 })
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request(turn1, { maxTokens: 2 }), "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.fork)
      yield* TestClock.adjust("999 millis")
      expect(recorder.tokens()).toHaveLength(0)
      yield* TestClock.adjust("1 millis")
      expect(recorder.tokens()).toHaveLength(1)
      yield* TestClock.adjust("100 millis")
      const finished = yield* Fiber.join(fiber)
      expect(recorder.tokens()).toHaveLength(2)
      expect(finished.usage.completionTokens).toBe(2)
    })
  )

  it.effect("the config's prefill keys reach the engine, and the heartbeat carries the cache counters", () =>
    Effect.gen(function* () {
      const engine = yield* InferenceEngine
      const sampler = yield* makeMetricsSampler()
      expect((yield* sampler.sample).promptCache).toEqual({ hits: 0, misses: 0, cachedTokens: 0, promptTokens: 0 })
      const run = yield* runEngine(engine, request(turn1)).pipe(Effect.fork)
      yield* TestClock.adjust("221 millis") // 442 words at 2000/s
      yield* Fiber.join(run)
      // Again: all 442 words are cached, no prefill.
      yield* runEngine(engine, request(turn1))
      expect((yield* sampler.sample).promptCache).toEqual({ hits: 1, misses: 1, cachedTokens: 442, promptTokens: 884 })
    }).pipe(
      Effect.provide(
        Layer.merge(
          SyntheticEngineLive.pipe(
            Layer.provide(
              syntheticConfigLayer({ tokensPerSecond: 0, firstTokenMs: 0, prefillTokensPerSecond: 2000, promptCacheSize: 2 })
            )
          ),
          WorkerStats.Default
        )
      )
    )
  )

  it.effect("a sampler without an engine reports no prompt cache", () =>
    Effect.gen(function* () {
      const sampler = yield* makeMetricsSampler()
      expect((yield* sampler.sample).promptCache).toBeUndefined()
    }).pipe(Effect.provide(WorkerStats.Default))
  )
})

import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Schema, TestClock } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { RequestId } from "../../../src/domain/ids.js"
import { InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import {
  fnv1a,
  makeSyntheticEngine,
  MAX_NATURAL_TOKENS,
  MIN_NATURAL_TOKENS,
  MAX_CATCH_UP_MS,
  naturalAnswer,
  planContinuation,
  planSynthetic,
  SYSTEM_FINGERPRINT,
  SyntheticEngineLive
} from "../../../src/worker/engines/synthetic-engine.js"
import { lateClock } from "../support/late-clock.js"
import { engineRequest, syntheticConfigLayer } from "../support/engine-fixtures.js"
import { runEngine, tokenRecorder } from "../support/run-engine.js"

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: "synthetic/demo", messages: [{ role: "user", content: "Say hello to the cluster please" }], maxTokens: 1000, ...over })

const fast = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 0 })

/** A prompt whose natural answer is longer than 100 tokens. */
const long = (over: Partial<InferenceRequest> = {}) =>
  request({ messages: [{ role: "user", content: "tell me a long story" }], ...over })

describe("synthetic engine", () => {
  it("fnv1a is the standard 32-bit hash", () => {
    expect(fnv1a("")).toBe(0x811c9dc5)
    expect(fnv1a("a")).toBe(0xe40c292c)
  })

  it("is deterministic per model + prompt and differs between prompts", () => {
    const a = naturalAnswer(request())
    expect(naturalAnswer(request({ requestId: Schema.decodeSync(RequestId)("other") }))).toEqual(a)
    expect(naturalAnswer(request({ messages: [{ role: "user", content: "something else" }] }))).not.toEqual(a)
    expect(naturalAnswer(request({ model: "other/model" }))).not.toEqual(a)
    expect(a.length).toBeGreaterThanOrEqual(MIN_NATURAL_TOKENS)
    expect(a.length).toBeLessThanOrEqual(MAX_NATURAL_TOKENS)
    expect(a[0]?.startsWith(" ")).toBe(false)
    expect(a.slice(1).every((t) => t.startsWith(" "))).toBe(true)
    expect(a.at(-1)?.endsWith(".")).toBe(true)
  })

  it("natural end → stop; maxTokens → length; prompt tokens are words of all messages", () => {
    const natural = planSynthetic(request())
    expect(natural.finishReason).toBe("stop")
    expect(natural.promptTokens).toBe(6)
    const cut = planSynthetic(request({ maxTokens: 5 }))
    expect(cut.tokens).toEqual(natural.tokens.slice(0, 5))
    expect(cut.finishReason).toBe("length")
    const prompt = planSynthetic(request({ messages: undefined, prompt: "  two   words " }))
    expect(prompt.promptTokens).toBe(2)
  })

  it("stop sequences end the answer before the sequence, also across token boundaries", () => {
    const natural = planSynthetic(request()).tokens
    const text = natural.join("")
    // a sequence made of the end of token 3 and the start of token 4
    const t3 = natural[3] ?? ""
    const t4 = natural[4] ?? ""
    const across = t3.slice(-2) + t4.slice(0, 3)
    const plan = planSynthetic(request({ stop: ["", across] }))
    expect(plan.finishReason).toBe("stop")
    const out = plan.tokens.join("")
    expect(text.startsWith(out)).toBe(true)
    expect(out + across).toBe(text.slice(0, text.indexOf(across) + across.length))
    expect(out.includes(across)).toBe(false)
    // a sequence at the very start: nothing is sent
    expect(planSynthetic(request({ stop: [natural[0] ?? ""] })).tokens).toEqual([])
    // the earliest of several sequences wins
    const both = planSynthetic(request({ stop: [natural[6] ?? "", natural[2] ?? ""] }))
    expect(both.tokens).toEqual(natural.slice(0, 2))
  })

  it("maxTokens absent: the natural answer, ending with stop", () => {
    const plan = planSynthetic(request({ maxTokens: undefined }))
    expect(plan.tokens).toEqual(naturalAnswer(request()))
    expect(plan.finishReason).toBe("stop")
    // a limit at exactly the natural length still ends with stop
    expect(planSynthetic(request({ maxTokens: plan.tokens.length })).finishReason).toBe("stop")
    expect(planSynthetic(request({ maxTokens: plan.tokens.length - 1 })).finishReason).toBe("length")
  })

  it.effect("emits the planned tokens then finishes with usage (unpaced)", () =>
    Effect.gen(function* () {
      const run = yield* runEngine(fast, request({ maxTokens: 40 }))
      const plan = planSynthetic(request({ maxTokens: 40 }))
      expect(run.tokens).toEqual(plan.tokens)
      expect(run.finish).toEqual({
        finishReason: plan.finishReason,
        usage: { promptTokens: 6, completionTokens: plan.tokens.length },
        systemFingerprint: SYSTEM_FINGERPRINT
      })
      expect(fast.type).toBe("synthetic")
    })
  )

  it.effect("unpaced: emits groups of at most 32 tokens (100 tokens → 32, 32, 32, 4)", () =>
    Effect.gen(function* () {
      const plan = planSynthetic(long({ maxTokens: 100 }))
      expect(plan.tokens.length).toBe(100)
      const run = yield* runEngine(fast, long({ maxTokens: 100 }))
      expect(run.batches.map((b) => b.length)).toEqual([32, 32, 32, 4])
      expect(run.tokens).toEqual(plan.tokens)
      expect(run.finish).toMatchObject({ finishReason: "length", usage: { completionTokens: 100 } })
      // exactly one group when the answer fits in one
      expect((yield* runEngine(fast, long({ maxTokens: 32 }))).batches.map((b) => b.length)).toEqual([32])
    })
  )

  it.effect("an empty answer emits nothing and finishes with zero completion tokens", () =>
    Effect.gen(function* () {
      const first = planSynthetic(request()).tokens[0] ?? ""
      const run = yield* runEngine(fast, request({ stop: [first] }))
      expect(run.batches).toEqual([])
      expect(run.finish).toEqual({ finishReason: "stop", usage: { promptTokens: 6, completionTokens: 0 }, systemFingerprint: SYSTEM_FINGERPRINT })
    })
  )

  it.effect("paces first token and tokens per second on the Effect clock", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 500 })
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request({ maxTokens: 3 }), "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.fork)
      yield* TestClock.adjust("499 millis")
      expect(recorder.batches).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(recorder.batches.length).toBe(1)
      yield* TestClock.adjust("99 millis")
      expect(recorder.batches.length).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(recorder.batches.length).toBe(2)
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("100 millis")
      const finish = yield* Fiber.join(fiber)
      // on time: one token per wake-up
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 1, 1])
      expect(recorder.tokens()).toEqual(planSynthetic(request({ maxTokens: 3 })).tokens)
      expect(finish).toEqual({ finishReason: "length", usage: { promptTokens: 6, completionTokens: 3 }, systemFingerprint: SYSTEM_FINGERPRINT })
    })
  )

  it.effect("paced, waking late: the overdue tokens go out together in one batch, none lost", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 0 })
      const clock = yield* lateClock(250)
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request({ maxTokens: 10 }), "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.withClock(clock), Effect.fork)
      yield* TestClock.adjust("0 millis")
      expect(recorder.batches.map((b) => b.length)).toEqual([1])
      // token 1 is due at 100 ms, but the engine only wakes at 350 ms: tokens 1, 2 and 3 are due then
      yield* TestClock.adjust("349 millis")
      expect(recorder.batches.map((b) => b.length)).toEqual([1])
      yield* TestClock.adjust("1 millis")
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 3])
      // drift-free: the next wake-up (due at 400, late to 650) sends 4, 5, 6; the last (700 → 950) 7, 8, 9
      yield* TestClock.adjust("600 millis")
      const finish = yield* Fiber.join(fiber)
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 3, 3, 3])
      expect(recorder.tokens()).toEqual(planSynthetic(request({ maxTokens: 10 })).tokens)
      expect(finish.usage.completionTokens).toBe(10)
    })
  )

  it.effect("stopped past MAX_CATCH_UP_MS (SIGSTOP): the engine resumes at its pace instead of sending all that came due", () =>
    Effect.gen(function* () {
      expect(MAX_CATCH_UP_MS).toBe(1_000)
      const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 0 })
      const clock = yield* lateClock(3_000)
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request({ maxTokens: 4 }), "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.withClock(clock), Effect.fork)
      yield* TestClock.adjust("0 millis")
      // token 1 was due at 100 ms; the engine wakes at 3100: a pause, so it sends token 1 only
      yield* TestClock.adjust("3100 millis")
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 1])
      yield* TestClock.adjust("6200 millis")
      const finish = yield* Fiber.join(fiber)
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 1, 1, 1])
      expect(recorder.tokens()).toEqual(planSynthetic(request({ maxTokens: 4 })).tokens)
      expect(finish.usage.completionTokens).toBe(4)
    })
  )

  it("a continuation (issue 13): the rest of the very same answer, max_tokens counted over the whole", () => {
    const whole = planSynthetic(long({ maxTokens: 60 }))
    expect(whole.tokens).toHaveLength(60)
    const rest = planContinuation(long({ maxTokens: 40, continuation: { text: whole.tokens.slice(0, 20).join(""), completionTokens: 20 } }))
    expect(rest.tokens).toEqual(whole.tokens.slice(20))
    expect(rest.finishReason).toBe("length")
    expect(rest.promptTokens).toBe(whole.promptTokens)
    // the natural end and the stop sequences are the whole answer's
    const natural = planSynthetic(long())
    const tail = planContinuation(long({ maxTokens: 1000 - 10, continuation: { text: "", completionTokens: 10 } }))
    expect(tail).toEqual({ ...natural, tokens: natural.tokens.slice(10) })
    const stopAt = natural.tokens.slice(0, 30).join("").slice(-8)
    const stopped = planSynthetic(long({ stop: [stopAt] }))
    expect(planContinuation(long({ stop: [stopAt], continuation: { text: "", completionTokens: 5 } })).tokens).toEqual(stopped.tokens.slice(5))
    // no continuation: the plain plan
    expect(planContinuation(long({ maxTokens: 7 }))).toEqual(planSynthetic(long({ maxTokens: 7 })))
  })

  it.effect("generate with a continuation emits the rest, and usage counts this attempt's tokens", () =>
    Effect.gen(function* () {
      const whole = planSynthetic(long({ maxTokens: 50 }))
      const run = yield* runEngine(fast, long({ maxTokens: 30, continuation: { text: "x", completionTokens: 20 } }))
      expect(run.tokens).toEqual(whole.tokens.slice(20))
      expect(run.finish).toEqual({
        finishReason: "length",
        usage: { promptTokens: whole.promptTokens, completionTokens: 30 },
        systemFingerprint: "fp_synthetic"
      })
      expect(fast.continuation).toEqual(["chat", "completions"])
    })
  )

  it.effect("first_token_ms applies without pacing too", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 200 })
      const recorder = tokenRecorder()
      const fiber = yield* engine.generate(request({ maxTokens: 100 }), "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.fork)
      yield* TestClock.adjust("199 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      expect(recorder.batches).toEqual([])
      yield* TestClock.adjust("1 millis")
      const finish = yield* Fiber.join(fiber)
      expect(recorder.tokens()).toEqual(planSynthetic(request({ maxTokens: 100 })).tokens)
      expect(finish.usage.completionTokens).toBe(recorder.tokens().length)
    })
  )

  it.live("unpaced generation is fast and can be interrupted between groups", () =>
    Effect.gen(function* () {
      const started = Date.now()
      const many = request({ maxTokens: 100_000 })
      const run = yield* runEngine(fast, many)
      expect(run.tokens.length).toBe(planSynthetic(many).tokens.length)
      expect(Date.now() - started).toBeLessThan(1000)
      // interruption lands while the engine yields to the event loop between groups
      const long256 = long()
      expect(planSynthetic(long256).tokens.length).toBeGreaterThan(64)
      const recorder = tokenRecorder()
      const fiber = yield* fast.generate(long256, "x", recorder.emit, recorder.emitToolCalls).pipe(Effect.fork)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(fiber)
      expect(recorder.batches.length).toBeGreaterThanOrEqual(1)
      expect(recorder.tokens().length).toBeLessThan(planSynthetic(long256).tokens.length)
    })
  )

  it.effect("SyntheticEngineLive reads worker.engine.synthetic", () =>
    Effect.gen(function* () {
      const engine = yield* InferenceEngine
      expect(engine.type).toBe("synthetic")
      const fiber = yield* Effect.fork(runEngine(engine, request({ maxTokens: 1 })))
      yield* TestClock.adjust("29 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const run = yield* Fiber.join(fiber)
      expect(run.batches).toEqual([planSynthetic(request({ maxTokens: 1 })).tokens])
    }).pipe(
      Effect.provide(
        SyntheticEngineLive.pipe(
          Layer.provide(
            syntheticConfigLayer({ tokensPerSecond: 0, firstTokenMs: 30 })
          )
        )
      )
    )
  )
})

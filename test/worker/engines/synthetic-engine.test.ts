import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Option, Stream, TestClock } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { RequestId } from "../../../src/domain/ids.js"
import { type EnginePiece, InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import {
  fnv1a,
  makeSyntheticEngine,
  MAX_NATURAL_TOKENS,
  MIN_NATURAL_TOKENS,
  naturalAnswer,
  planSynthetic,
  SyntheticEngineLive
} from "../../../src/worker/engines/synthetic-engine.js"
import { Schema } from "effect"

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest => ({
  requestId: Schema.decodeSync(RequestId)("r1"),
  model: "synthetic/demo",
  messages: [{ role: "user", content: "Say hello to the cluster please" }],
  maxTokens: 1000,
  stream: true,
  ...over
})

const tokensOf = (pieces: ReadonlyArray<EnginePiece>) => pieces.flatMap((p) => (p._tag === "Token" ? [p.text] : []))
const finishOf = (pieces: ReadonlyArray<EnginePiece>) => pieces.at(-1)

const fast = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 0 })

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

  it.effect("streams the planned tokens then one finish with usage (unpaced)", () =>
    Effect.gen(function* () {
      const pieces = Chunk.toReadonlyArray(yield* Stream.runCollect(fast.generate(request({ maxTokens: 40 }), "x")))
      const plan = planSynthetic(request({ maxTokens: 40 }))
      expect(tokensOf(pieces)).toEqual(plan.tokens)
      expect(finishOf(pieces)).toEqual({
        _tag: "Finish",
        finishReason: plan.finishReason,
        usage: { promptTokens: 6, completionTokens: plan.tokens.length }
      })
      expect(fast.type).toBe("synthetic")
    })
  )

  it.effect("paces first token and tokens per second on the Effect clock", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 10, firstTokenMs: 500 })
      const seen: Array<string> = []
      const fiber = yield* engine.generate(request({ maxTokens: 3 }), "x").pipe(
        Stream.runForEach((p) => Effect.sync(() => seen.push(p._tag))),
        Effect.fork
      )
      yield* TestClock.adjust("499 millis")
      expect(seen).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(seen).toEqual(["Token"])
      yield* TestClock.adjust("99 millis")
      expect(seen).toEqual(["Token"])
      yield* TestClock.adjust("1 millis")
      expect(seen).toEqual(["Token", "Token"])
      yield* TestClock.adjust("100 millis")
      yield* Fiber.join(fiber)
      expect(seen).toEqual(["Token", "Token", "Token", "Finish"])
    })
  )

  it.effect("first_token_ms applies without pacing too", () =>
    Effect.gen(function* () {
      const engine = makeSyntheticEngine({ tokensPerSecond: 0, firstTokenMs: 200 })
      const fiber = yield* engine.generate(request({ maxTokens: 100 }), "x").pipe(Stream.runCollect, Effect.fork)
      yield* TestClock.adjust("199 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const pieces = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
      expect(pieces.length).toBe(planSynthetic(request({ maxTokens: 100 })).tokens.length + 1)
    })
  )

  it.live("unpaced generation is fast and can be interrupted between chunks", () =>
    Effect.gen(function* () {
      const started = Date.now()
      let count = 0
      const many = request({ maxTokens: 100_000 })
      yield* fast.generate(many, "x").pipe(Stream.runForEach(() => Effect.sync(() => count++)))
      expect(count).toBe(planSynthetic(many).tokens.length + 1)
      expect(Date.now() - started).toBeLessThan(1000)
      // interruption lands while the stream yields to the event loop
      const fiber = yield* fast.generate(many, "x").pipe(Stream.runDrain, Effect.fork)
      yield* Fiber.interrupt(fiber)
    })
  )

  it.effect("SyntheticEngineLive reads worker.engine.synthetic", () =>
    Effect.gen(function* () {
      const engine = yield* InferenceEngine
      expect(engine.type).toBe("synthetic")
      const fiber = yield* engine.generate(request({ maxTokens: 1 }), "x").pipe(Stream.runCollect, Effect.fork)
      yield* TestClock.adjust("30 millis")
      expect(Chunk.size(yield* Fiber.join(fiber))).toBe(2)
    }).pipe(
      Effect.provide(
        SyntheticEngineLive.pipe(
          Layer.provide(
            ClusterConfigService.layerTest((c) => ({
              ...c,
              worker: {
                ...c.worker,
                engine: { ...c.worker.engine, synthetic: { ...c.worker.engine.synthetic, tokensPerSecond: 0, firstTokenMs: 30 } }
              }
            }))
          )
        )
      )
    )
  )
})

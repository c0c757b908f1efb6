import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Stream } from "effect"
import { honouring, selectWorker } from "../../src/controller/balancer.js"
import { Router } from "../../src/controller/router.js"
import { UnsupportedParameter, UpstreamRejected } from "../../src/domain/errors.js"
import { requirementsOf } from "../../src/domain/features.js"
import { RequestId } from "../../src/domain/ids.js"
import type { RelayEvent, RouteRequest } from "../../src/domain/route.js"
import { info } from "./support/fixtures.js"
import { expectIdle, failureOf, outcomes, routeTo, settle, withRouter } from "./support/router-harness.js"
import { doneMsg, errorMsg, startWorker, tokenMsg } from "./support/scripted-workers.js"

/**
 * Issue 12 in the Router and the balancer: the client's fields reach the worker, capabilities pick
 * the workers, tool-call deltas and logprobs are relayed in order, and an upstream's refusal of the
 * request is final.
 */

const MODEL = "m/Model-7B"

const chat = (patch: Partial<RouteRequest> = {}): RouteRequest => {
  const base: RouteRequest = { model: MODEL, messages: [{ role: "user", content: "Weather?" }], endpoint: "chat", ...patch }
  const requires = requirementsOf(base)
  return requires.length === 0 ? base : { ...base, requires }
}

const run = (r: RouteRequest) =>
  Effect.flatMap(Router, (router) =>
    router.route(r).pipe(
      Stream.runCollect,
      Effect.map((c) => Chunk.toReadonlyArray(c)),
      Effect.exit
    )
  )

describe("balancer: capabilities", () => {
  const tools = [{ feature: "tools", param: "tools" }] as const
  const both = [
    { feature: "tools", param: "tools" },
    { feature: "logprobs", param: "logprobs" }
  ] as const

  it("only workers whose engine honours every requirement; per-model lists replace the worker's", () => {
    const a = info({ id: "a", features: ["tools"] })
    const b = info({ id: "b", features: ["logprobs"] })
    const c = info({ id: "c", features: ["tools"], modelFeatures: { [MODEL]: ["logprobs"] } })
    expect(Either.getOrThrow(honouring([a, b, c], MODEL, tools)).map((w) => w.workerId)).toEqual(["a"])
    expect(Either.getOrThrow(honouring([a, b, c], "other/model", tools)).map((w) => w.workerId)).toEqual(["a", "c"])
    const chosen = selectWorker("smart", { model: MODEL, requires: [...tools] }, [b, c, a], () => 0, undefined)
    expect(Either.getOrThrow(chosen).worker.workerId).toBe("a")
  })

  it("none: UnsupportedParameter naming the parameter, and the one it clashes with when each is honoured apart", () => {
    const a = info({ id: "a", features: ["tools"] })
    const b = info({ id: "b", features: ["logprobs"] })
    const alone = Either.flip(honouring([b], MODEL, tools))
    expect(Either.getOrThrow(alone)).toEqual(new UnsupportedParameter({ model: MODEL, param: "tools", feature: "tools" }))
    expect(Either.getOrThrow(alone).message).toBe(`Unsupported parameter: 'tools' is not supported by any worker serving "${MODEL}"`)
    const apart = Either.getOrThrow(Either.flip(honouring([a, b], MODEL, both)))
    expect(apart.message).toBe(`Unsupported parameter: 'logprobs' is not supported by any worker serving "${MODEL}" that also supports 'tools'`)
    const completions = new UnsupportedParameter({ model: MODEL, param: "prompt", feature: "completions" })
    expect(completions.message).toContain("/v1/completions")
  })

  it("a worker that registered no features (an older one) serves plain requests and legacy completions only", () => {
    const old = info({ id: "old" })
    expect(Either.isRight(honouring([old], MODEL, [{ feature: "completions", param: "prompt" }]))).toBe(true)
    expect(Either.isLeft(honouring([old], MODEL, tools))).toBe(true)
    expect(Either.isRight(selectWorker("round_robin", { model: MODEL, requires: [] }, [old], () => 0, undefined))).toBe(true)
  })
})

describe("Router: issue 12", () => {
  it.effect("params and endpoint reach the worker unchanged; a worker without the feature is never asked", () =>
    withRouter()(
      Effect.gen(function* () {
        const plain = yield* startWorker({ id: "plain", features: [], priority: 10 })
        const able = yield* startWorker({ id: "able", features: ["tools", "seed"] })
        const params = { tools: [{ type: "function", function: { name: "f", parameters: {} } }], tool_choice: "auto", seed: 3, user: "u" }
        const [c, req] = yield* routeTo(able, chat({ params }))
        expect(req.params).toEqual(params)
        expect(req.endpoint).toBe("chat")
        expect(req.maxTokens).toBeUndefined()
        yield* able.emit(doneMsg(req.requestId, 0))
        yield* c.exit
        expect(yield* plain.received).toEqual([])
        yield* expectIdle
      })
    )
  )

  it.effect("no online worker honours it: a 400 UnsupportedParameter, nothing dispatched", () =>
    withRouter()(
      Effect.gen(function* () {
        const plain = yield* startWorker({ id: "plain", features: ["seed"] })
        const exit = yield* run(chat({ params: { logprobs: true } }))
        expect(failureOf(exit)).toMatchObject({ _tag: "UnsupportedParameter", param: "logprobs" })
        expect(yield* plain.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )

  it.effect("tool-call deltas and logprobs are relayed in order; the deltas take indexes like tokens", () =>
    withRouter()(
      Effect.gen(function* () {
        const w = yield* startWorker({ id: "w", features: ["tools", "logprobs"] })
        const [c, req] = yield* routeTo(w, chat())
        const id = RequestId.make(req.requestId)
        const entry = { token: "Hi", logprob: -0.1, top_logprobs: [] }
        yield* w.emit(
          { type: "tokens", requestId: id, index: 0, tokens: ["Hi"], logprobs: [entry] },
          { type: "tool_calls", requestId: id, index: 1, deltas: [{ index: 0, id: "call_1", type: "function", function: { name: "f", arguments: "" } }, { index: 0, function: { arguments: "{}" } }] },
          tokenMsg(req.requestId, 3, "!"),
          { type: "done", requestId: id, finishReason: "tool_calls", usage: { promptTokens: 1, completionTokens: 4 }, latencyMs: 1, systemFingerprint: "fp_x" }
        )
        yield* c.exit
        const batches: ReadonlyArray<RelayEvent> = yield* c.batches
        expect(batches).toEqual([
          { type: "tokens", index: 0, tokens: ["Hi"], logprobs: [entry] },
          {
            type: "toolCalls",
            index: 1,
            deltas: [{ index: 0, id: "call_1", type: "function", function: { name: "f", arguments: "" } }, { index: 0, function: { arguments: "{}" } }]
          },
          { type: "tokens", index: 3, tokens: ["!"] },
          { type: "done", finishReason: "tool_calls", usage: { promptTokens: 1, completionTokens: 4 }, latencyMs: 1, workerId: "w", systemFingerprint: "fp_x" }
        ])
        yield* expectIdle
      })
    )
  )

  it.effect("a gap after tool-call deltas is caught like a token gap", () =>
    withRouter()(
      Effect.gen(function* () {
        const w = yield* startWorker({ id: "w", features: ["tools"] })
        const [c, req] = yield* routeTo(w, chat())
        const id = RequestId.make(req.requestId)
        yield* w.emit({ type: "tool_calls", requestId: id, index: 0, deltas: [{ index: 0, id: "c", type: "function", function: { name: "f" } }, { index: 0 }] }, tokenMsg(req.requestId, 1, "x"))
        expect(failureOf(yield* c.exit)).toMatchObject({ _tag: "WorkerFailed", code: "token_gap", message: expect.stringContaining("expected token 2") })
        yield* settle
        expect(yield* w.cancels).toEqual([req.requestId])
        yield* expectIdle
      })
    )
  )

  it.effect("an upstream's refusal (error with a 4xx status) is final: the client's error, no other worker tried", () =>
    withRouter()(
      Effect.gen(function* () {
        const w1 = yield* startWorker({ id: "w1", priority: 10 })
        const w2 = yield* startWorker({ id: "w2" })
        const [c, req] = yield* routeTo(w1, chat())
        yield* w1.emit({
          ...errorMsg(req.requestId, "context_length_exceeded", "too long"),
          status: 400,
          errorType: "invalid_request_error",
          param: "messages"
        } as never)
        const error = failureOf(yield* c.exit)
        expect(error).toEqual(
          new UpstreamRejected({ workerId: "w1", status: 400, message: "too long", code: "context_length_exceeded", errorType: "invalid_request_error", param: "messages" })
        )
        expect(yield* w2.received).toEqual([])
        expect(yield* outcomes).toEqual({ succeeded: 0, failed: 1, cancelled: 0 })
        yield* expectIdle
      })
    )
  )
})

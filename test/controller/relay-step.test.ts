import { describe, expect, it } from "@effect/vitest"
import { initialRelayState, step, workerLost } from "../../src/controller/relay-step.js"
import { RequestId } from "../../src/domain/ids.js"
import type { TokenMessage } from "../../src/domain/inference.js"

const id = RequestId.make("req-1")
const ctx = { workerId: "w1", relayedBefore: 0 }
const tokens = (index: number, ...t: ReadonlyArray<string>): TokenMessage => ({ type: "tokens", requestId: id, index, tokens: t })
const done: TokenMessage = { type: "done", requestId: id, finishReason: "stop", usage: { promptTokens: 2, completionTokens: 3 }, latencyMs: 7 }
const error = (code: string): TokenMessage => ({ type: "error", requestId: id, code, message: `${code}!` })

/** Feeds messages through `step` as the relay does, stopping at the first outcome. */
const run = (messages: ReadonlyArray<TokenMessage>, context = ctx) => {
  let state = initialRelayState
  const events = []
  for (const message of messages) {
    const r = step(state, message, context)
    state = r.state
    if (r.event !== undefined) events.push(r.event)
    if (r.outcome !== undefined) return { state, events, outcome: r.outcome }
  }
  return { state, events, outcome: undefined }
}

describe("relay step", () => {
  it("passes each batch on as one event, in order, and ends with done", () => {
    const r = run([tokens(0, "a", "b"), { type: "token", requestId: id, index: 2, token: "c" }, done])
    expect(r.events).toEqual([
      { type: "tokens", index: 0, tokens: ["a", "b"] },
      { type: "tokens", index: 2, tokens: ["c"] },
      { type: "done", finishReason: "stop", usage: { promptTokens: 2, completionTokens: 3 }, latencyMs: 7, workerId: "w1" }
    ])
    expect(r.outcome?._tag).toBe("Done")
    expect(r.state).toEqual({ expected: 3, finished: true })
  })

  it("a gap in the indexes fails with token_gap and leaves the worker not finished (it is cancelled)", () => {
    const r = run([tokens(0, "a"), tokens(2, "c")])
    expect(r.outcome).toMatchObject({ _tag: "Fail", error: { _tag: "WorkerFailed", code: "token_gap", message: expect.stringContaining("expected token 1") } })
    expect(r.events).toHaveLength(1)
    expect(r.state.finished).toBe(false)
  })

  it("a worker error before any token is worth another worker; after a token, or final by its code, it is the request's", () => {
    expect(run([error("engine_start_failed")]).outcome).toMatchObject({ _tag: "Retry", kind: "worker_error" })
    expect(run([tokens(0, "a"), error("engine_crashed")]).outcome).toMatchObject({ _tag: "Fail", error: { code: "engine_crashed" } })
    for (const code of ["timeout", "cancelled", "invalid_request"]) {
      expect(run([error(code)]).outcome).toMatchObject({ _tag: "Fail", error: { code } })
    }
    // Tokens relayed by an earlier attempt count too.
    expect(run([error("engine_crashed")], { workerId: "w2", relayedBefore: 5 }).outcome?._tag).toBe("Fail")
    expect(run([error("x")]).state.finished).toBe(true)
  })

  it("a lost worker: retry while nothing was relayed, else worker_lost naming the reason", () => {
    expect(workerLost(initialRelayState, ctx, "no responders")).toMatchObject({ _tag: "Retry", kind: "worker_offline" })
    const after = run([tokens(0, "a")]).state
    expect(workerLost(after, ctx, "no heartbeat for 15.2 s")).toMatchObject({
      _tag: "Fail",
      error: { code: "worker_lost", message: "worker w1 went offline: no heartbeat for 15.2 s" }
    })
  })
})

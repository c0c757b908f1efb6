import { describe, expect, it } from "@effect/vitest"
import {
  checkChatTargets,
  parseAffinityCounters,
  summariseStrategy,
  type TurnSample,
  type WorkerReport
} from "../../bench/chat-report.js"
import { makeWorkload, messagesFor } from "../../bench/chat-workload.js"
import { splitScenario } from "../../bench/cli.js"
import { contentOf } from "../../bench/load.js"
import { promptChain } from "../../src/domain/prompt-chain.js"

describe("chat benchmark: workload", () => {
  const options = { conversations: 10, turns: 3, personas: 4, systemWords: [300, 500], userWords: [20, 60], seed: 1 } as const

  it("is deterministic; conversations of one persona share its system prompt, others do not", () => {
    const a = makeWorkload(options)
    expect(makeWorkload(options)).toEqual(a)
    expect(a[0]?.system).toBe(a[4]?.system)
    expect(a[0]?.system).not.toBe(a[1]?.system)
    const words = (a[0]?.system ?? "").split(" ").length
    expect(words).toBeGreaterThanOrEqual(302)
    expect(words).toBeLessThanOrEqual(502)
    expect(a[0]?.userMessages).toHaveLength(3)
  })

  it("each turn's prompt starts with the previous turn's prompt and its answer", () => {
    const [c] = makeWorkload(options)
    if (c === undefined) throw new Error("no conversation")
    const turn1 = messagesFor(c, 0, [])
    const turn2 = messagesFor(c, 1, ["the answer"])
    expect(turn1.map((m) => m.role)).toEqual(["system", "user"])
    expect(turn2.slice(0, 2)).toEqual(turn1)
    expect(turn2[2]).toEqual({ role: "assistant", content: "the answer" })
    const chain1 = promptChain({ model: "m", messages: [...turn1, { role: "assistant", content: "the answer" }] })
    const chain2 = promptChain({ model: "m", messages: turn2 })
    expect(chain2.hashes.slice(0, chain1.hashes.length)).toEqual(chain1.hashes)
  })
})

describe("chat benchmark: report", () => {
  it("reads the affinity counters from the Prometheus text, whatever the suffix and other labels", () => {
    const text = [
      "# HELP mlx_cluster_affinity_total Dispatches by prefix affinity",
      "# TYPE mlx_cluster_affinity_total counter",
      'mlx_cluster_affinity_total{result="hit",otel_scope_name="x"} 90',
      'mlx_cluster_affinity_total{result="displaced"} 4',
      'mlx_cluster_affinity_total{result="miss"} 6',
      'mlx_cluster_affinity_prompt_tokens_total{cached="true"} 9000',
      'mlx_cluster_affinity_prompt_tokens_total{cached="false"} 1000',
      'mlx_cluster_requests_total{outcome="hit"} 1'
    ].join("\n")
    expect(parseAffinityCounters(text)).toEqual({ hits: 90, displaced: 4, misses: 6, cachedTokens: 9000, uncachedTokens: 1000 })
    expect(parseAffinityCounters("mlx_cluster_requests_total 3\n")).toBeUndefined()
  })

  it("summarises TTFT, the workers' cache counters, the modelled prefill and the load spread; checks the targets", () => {
    const sample = (turn: number, ttftMs: number, error?: string): TurnSample => ({
      conversation: 0,
      turn,
      promptWords: 100,
      ttftMs,
      durationMs: ttftMs,
      error
    })
    const workers = (requests: ReadonlyArray<number>, cached: number): ReadonlyArray<WorkerReport> =>
      requests.map((n, i) => ({
        workerId: `w${i}`,
        requests: n,
        promptCache: { hits: n - 1, misses: 1, cachedTokens: cached * n, promptTokens: 100 * n }
      }))
    const rr = summariseStrategy("round_robin", [sample(0, 300), sample(1, 400), sample(1, 500)], workers([3, 3], 50), undefined, 1000, 1, 2000)
    const smart = summariseStrategy("smart", [sample(0, 80), sample(1, 90), sample(1, 100)], workers([10, 9], 95), undefined, 1000, 1, 2000)
    expect(rr.ttftP50Ms).toBe(400)
    expect(rr.ttftP50ByTurnMs).toEqual([300, 400])
    expect(rr.cacheTokenHitRate).toBeCloseTo(0.5)
    expect(rr.cacheRequestHitRate).toBeCloseTo(4 / 6)
    expect(rr.prefillMeanMs).toBeCloseTo(25) // 50 uncached words at 2000/s
    expect(smart.loadMaxOverMin).toBeCloseTo(10 / 9)
    expect(checkChatTargets([rr, smart]).map((t) => t.met)).toEqual([true, true, true, true])
    const failing = summariseStrategy("smart", [sample(0, 200, "HTTP 503")], workers([10, 5], 80), undefined, 1000, 1, 2000)
    expect(checkChatTargets([rr, failing]).map((t) => t.met)).toEqual([false, false, false, false])
    expect(checkChatTargets([rr])[0]?.met).toBe(false)
  })

  it("splits --scenario off the arguments and reads the content of an SSE stream", () => {
    expect(splitScenario(["--scenario", "chat", "--turns", "3"])).toEqual({ scenario: "chat", argv: ["--turns", "3"] })
    expect(splitScenario(["--scenario=chat"]).scenario).toBe("chat")
    expect(splitScenario(["--workers", "2"])).toEqual({ scenario: "relay", argv: ["--workers", "2"] })
    const sse = 'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: {"choices":[{"delta":{"content":"Hi \\"x\\""}}]}\n\ndata: {"choices":[{"delta":{"content":" there."}}]}\n\ndata: [DONE]\n\n'
    expect(contentOf(sse)).toBe('Hi "x" there.')
  })
})

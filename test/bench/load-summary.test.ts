import { describe, expect, it } from "vitest"
import { type Sample, summarise } from "../../bench/load.js"

const sample = (startedAt: number, ttftMs: number, endedAt: number, error?: string): Sample => ({
  startedAt,
  endedAt,
  ttftMs,
  tokens: 32,
  bytes: 7_000,
  error
})

describe("bench: a closed loop's window", () => {
  it("counts throughput by the requests that ended in the window, and TTFT only by those that also started in it", () => {
    const samples = [
      // Started in the warm-up, its connection's SYN lost and sent again a second later.
      sample(10, 1_010, 1_020),
      sample(1_100, 2, 1_103),
      sample(1_200, 4, 1_205),
      // Ended after the window.
      sample(1_990, 3, 2_010),
      sample(1_500, 1, 1_502, "http 503")
    ]
    const stats = summarise(samples, 1_000, 2_000, samples.length)
    expect(stats.requests).toBe(3)
    expect(stats.reqPerSecond).toBe(3)
    expect(stats.tokensPerSecond).toBe(96)
    expect(stats.ttftMaxMs).toBe(4)
    expect(stats.ttftP50Ms).toBe(2)
    expect(stats.errors).toBe(1)
  })
})

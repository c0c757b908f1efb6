import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import {
  acquireSlot,
  cpuUsageBetween,
  makeMetricsSampler,
  memoryUsage,
  releaseSlot,
  tokensPerSecond,
  WorkerStats
} from "../../src/worker/worker-stats.js"

const empty = { active: 0, total: 0, succeeded: 0, failed: 0, cancelled: 0, tokens: 0 }

describe("worker stats", () => {
  it("slots: acquire up to max, release by outcome", () => {
    const [ok1, s1] = acquireSlot(empty, 1)
    expect(ok1).toBe(true)
    expect(s1).toMatchObject({ active: 1, total: 1 })
    const [ok2, s2] = acquireSlot(s1, 1)
    expect(ok2).toBe(false)
    expect(s2).toBe(s1)
    expect(releaseSlot(s1, "succeeded")).toMatchObject({ active: 0, total: 1, succeeded: 1, failed: 0, cancelled: 0 })
    expect(releaseSlot(s1, "failed")).toMatchObject({ active: 0, failed: 1 })
    expect(releaseSlot(s1, "cancelled")).toMatchObject({ active: 0, succeeded: 0, failed: 0, cancelled: 1 })
    expect(releaseSlot(empty, "failed").active).toBe(0)
  })

  it("cpuUsageBetween: busy share of all cores; 0 without elapsed time", () => {
    const t = (user: number, idle: number) => ({ user, nice: 0, sys: 0, idle, irq: 0 })
    expect(cpuUsageBetween([t(0, 0), t(0, 0)], [t(50, 50), t(100, 0)])).toBe(0.75)
    expect(cpuUsageBetween([t(10, 10)], [t(10, 10)])).toBe(0)
    expect(cpuUsageBetween([], [t(10, 10)])).toBe(0)
    expect(cpuUsageBetween([t(10, 10)], [t(5, 30)])).toBe(0) // counter reset: ignored
  })

  it("memoryUsage and tokensPerSecond", () => {
    expect(memoryUsage(25, 100)).toBe(0.75)
    expect(memoryUsage(0, 0)).toBe(0)
    expect(tokensPerSecond(150, 50, 2000)).toBe(50)
    expect(tokensPerSecond(10, 10, 0)).toBe(0)
  })

  it.effect("the sampler reports counters and tokens/s over the interval since the last sample", () =>
    Effect.gen(function* () {
      const stats = yield* WorkerStats
      const sampler = yield* makeMetricsSampler()
      expect(yield* stats.tryAcquire(2)).toBe(true)
      stats.countTokens(60)
      stats.countTokens(40)
      expect((yield* stats.snapshot).tokens).toBe(100)
      yield* TestClock.adjust("2 seconds")
      const first = yield* sampler.sample
      expect(first.requests).toEqual({ active: 1, total: 1, succeeded: 0, failed: 0 })
      expect(first.tokensPerSecond).toBe(50)
      expect(first.cpuUsage).toBeGreaterThanOrEqual(0)
      expect(first.cpuUsage).toBeLessThanOrEqual(1)
      expect(first.memoryUsage).toBeGreaterThan(0)
      expect(first.memoryUsage).toBeLessThanOrEqual(1)
      yield* stats.release("succeeded")
      yield* TestClock.adjust("1 second")
      const second = yield* sampler.sample
      expect(second.requests).toEqual({ active: 0, total: 1, succeeded: 1, failed: 0 })
      expect(second.tokensPerSecond).toBe(0)
    }).pipe(Effect.provide(WorkerStats.Default))
  )
})

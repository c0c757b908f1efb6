import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, TestClock } from "effect"
import {
  type ActivityInput,
  ActivityWindow,
  ClusterActivity,
  FAILURES_KEPT,
  percentile,
  RATE_WINDOW_SECONDS,
  SecondRing,
  SERIES_SECONDS
} from "../../src/controller/cluster-activity.js"

const request = (patch: Partial<ActivityInput> = {}): ActivityInput => ({
  requestId: "req-1",
  route: "chat",
  model: "m/known",
  modelKnown: true,
  outcome: "succeeded",
  status: 200,
  tokens: 10,
  retries: 0,
  ...patch
})

describe("SecondRing", () => {
  it("adds per second, clears the seconds it skips, and forgets what left the window", () => {
    const ring = new SecondRing(5, 1)
    ring.add(100, 0, 1)
    ring.add(100, 0, 2)
    ring.add(102, 0, 4)
    expect([ring.get(100, 0), ring.get(101, 0), ring.get(102, 0)]).toEqual([3, 0, 4])
    expect(ring.sum(100, 102, 0)).toBe(7)
    ring.add(106, 0, 1) // 100..101 left the window
    expect([ring.get(100, 0), ring.get(102, 0), ring.get(106, 0), ring.get(107, 0)]).toEqual([0, 4, 1, 0])
    ring.add(200, 0, 1) // a jump longer than the window clears everything
    expect(ring.sum(196, 200, 0)).toBe(1)
    ring.add(150, 0, 9) // older than the window: dropped
    expect(ring.sum(140, 200, 0)).toBe(1)
  })
})

describe("percentile", () => {
  it("is the nearest rank", () => {
    expect(percentile([], 0.5)).toBeNull()
    expect(percentile([7], 0.95)).toBe(7)
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1)
    expect(percentile(hundred, 0.5)).toBe(50)
    expect(percentile(hundred, 0.95)).toBe(95)
  })
})

describe("ActivityWindow", () => {
  it("plots the last five minutes per second, oldest first, ending with the last complete second", () => {
    const w = new ActivityWindow()
    const t0 = 1_000_000_000
    w.record(request({ tokens: 5 }), t0 + 100)
    w.record(request({ tokens: 7 }), t0 + 900)
    w.record(request({ outcome: "failed", status: 503, errorCode: "no_workers", tokens: 0 }), t0 + 2_500)
    const s = w.snapshot(t0 + 3_200)
    expect(s.series.requests).toHaveLength(SERIES_SECONDS)
    expect(s.series.endAt).toBe(t0 + 3_000)
    // t0 is three seconds before the end: index SERIES_SECONDS - 3.
    expect(s.series.requests.slice(-3)).toEqual([2, 0, 1])
    expect(s.series.tokens.slice(-3)).toEqual([12, 0, 0])
    expect(s.series.failures.slice(-3)).toEqual([0, 0, 1])
    // Five minutes later, all of it has scrolled out.
    const later = w.snapshot(t0 + 3_200 + SERIES_SECONDS * 1000)
    expect(later.series.requests.every((n) => n === 0)).toBe(true)
  })

  it("gives rates over the last ten seconds, per model only for models a worker registered", () => {
    const w = new ActivityWindow()
    const t0 = 2_000_000_000
    for (let i = 0; i < 20; i++) w.record(request({ tokens: 3 }), t0 + i * 500) // 20 requests in 10 s
    w.record(request({ model: "typo/model", modelKnown: false, outcome: "failed", status: 404, errorCode: "model_not_found", tokens: 0 }), t0 + 9_000)
    const s = w.snapshot(t0 + 9_999)
    expect(s.requestsPerSecond).toBe(2.1)
    expect(s.tokensPerSecond).toBe(6)
    expect(s.models.get("m/known")).toEqual({ requestsPerSecond: 2, tokensPerSecond: 6 })
    expect(s.models.has("typo/model")).toBe(false)
    expect(w.snapshot(t0 + 9_999 + RATE_WINDOW_SECONDS * 1000).requestsPerSecond).toBe(0)
  })

  it("takes TTFT percentiles over the last minute only", () => {
    const w = new ActivityWindow()
    const t0 = 3_000_000_000
    w.record(request({ ttftMs: 5_000 }), t0) // leaves the window first
    for (let i = 1; i <= 100; i++) w.record(request({ ttftMs: i }), t0 + 30_000)
    w.record(request({ outcome: "failed", status: 504, tokens: 0 }), t0 + 30_000) // no token, no sample
    const s = w.snapshot(t0 + 61_000)
    expect(s.ttftSamples).toBe(100)
    expect(s.ttftP50Ms).toBe(50)
    expect(s.ttftP95Ms).toBe(95)
    const empty = w.snapshot(t0 + 200_000)
    expect([empty.ttftP50Ms, empty.ttftP95Ms, empty.ttftSamples]).toEqual([null, null, 0])
  })

  it("keeps the last 20 failures, newest first, with code, request id, model and status", () => {
    const w = new ActivityWindow()
    for (let i = 0; i < 25; i++) {
      w.record(request({ requestId: `req-${i}`, outcome: "failed", status: 502, errorCode: "worker_lost", workerId: "w1" }), 1_000 + i)
    }
    w.record(request({ requestId: "req-ok" }), 2_000)
    w.record(request({ requestId: "req-gone", outcome: "cancelled", status: 200 }), 2_001)
    const { failures } = w.snapshot(3_000)
    expect(failures).toHaveLength(FAILURES_KEPT)
    expect(failures[0]).toEqual({ at: 1_024, requestId: "req-24", route: "chat", model: "m/known", code: "worker_lost", status: 502, workerId: "w1" })
    expect(failures.at(-1)?.requestId).toBe("req-5")
  })

  it("cuts a model name a client made up to 128 characters in the failures list", () => {
    const w = new ActivityWindow()
    w.record(request({ model: "x".repeat(10_000), modelKnown: false, outcome: "failed", status: 404, errorCode: "model_not_found" }), 1)
    expect(w.snapshot(2).failures[0]?.model).toHaveLength(128)
  })

  it("counts retries and client cancels", () => {
    const w = new ActivityWindow()
    w.record(request({ retries: 2 }), 1)
    w.record(request({ outcome: "cancelled", retries: 1 }), 2)
    w.record(request({ outcome: "cancelled" }), 3)
    expect(w.snapshot(4)).toMatchObject({ retries: 3, cancels: 2 })
  })
})

describe("ClusterActivity", () => {
  it.effect("records and reads on the Clock, so TestClock moves its windows", () =>
    Effect.gen(function* () {
      const activity = yield* ClusterActivity
      yield* TestClock.setTime(10_000_000)
      activity.unsafeRecord(request({ tokens: 4 }), yield* Clock.currentTimeMillis)
      yield* TestClock.adjust("1 second")
      const now = yield* activity.snapshot
      expect(now.series.requests.at(-1)).toBe(1)
      expect(now.requestsPerSecond).toBe(0.1)
      yield* TestClock.adjust("5 minutes")
      const later = yield* activity.snapshot
      expect(later.series.requests.reduce((a, b) => a + b, 0)).toBe(0)
      expect(later.models.size).toBe(0) // an idle model leaves the per-model rates
    }).pipe(Effect.provide(ClusterActivity.Default))
  )
})

import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { LoadMonitor } from "../../src/controller/load-monitor.js"

/** Holds the event loop for `ms`: what an overloaded controller's loop looks like. */
const block = (ms: number) =>
  Effect.sync(() => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      // busy
    }
  })

// The real event loop is what is measured here, so these tests run on real time (they cannot be TestClock tests).
it.scopedLive("one stall is remembered for the health sweep but is not an overload", () =>
  Effect.gen(function* () {
    const monitor = yield* LoadMonitor
    yield* Effect.sleep("50 millis")
    expect(monitor.sustainedLagMs()).toBeLessThan(150)
    yield* block(400)
    yield* Effect.sleep("30 millis")
    expect(monitor.maxLagMs(10_000)).toBeGreaterThanOrEqual(300)
    expect(monitor.sustainedLagMs()).toBeLessThan(150)
    // The stall now sits in the last complete window only: still not an overload.
    yield* Effect.sleep("1100 millis")
    expect(monitor.sustainedLagMs()).toBeLessThan(150)
    expect(monitor.maxLagMs(10_000)).toBeGreaterThanOrEqual(300)
  }).pipe(Effect.provide(LoadMonitor.Default))
)

it.scopedLive("a loop that stays behind window after window is overloaded, and recovers", () =>
  Effect.gen(function* () {
    const monitor = yield* LoadMonitor
    // 300 ms stalls with short breathers for 2.4 s: every one-second window holds one.
    for (let i = 0; i < 8; i++) {
      yield* block(300)
      yield* Effect.sleep("5 millis")
    }
    expect(monitor.sustainedLagMs()).toBeGreaterThanOrEqual(250)
    yield* Effect.sleep("2100 millis")
    expect(monitor.sustainedLagMs()).toBeLessThan(150)
  }).pipe(Effect.provide(LoadMonitor.Default))
)

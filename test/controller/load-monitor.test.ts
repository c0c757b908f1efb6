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

// The real event loop is what is measured here, so this test runs on real time (it cannot be a TestClock test).
it.scopedLive("sees a stalled event loop at once, and forgets it a window later", () =>
  Effect.gen(function* () {
    const monitor = yield* LoadMonitor
    yield* Effect.sleep("50 millis")
    expect(monitor.lagMs()).toBeLessThan(150)
    yield* block(400)
    yield* Effect.sleep("30 millis")
    expect(monitor.lagMs()).toBeGreaterThanOrEqual(300)
    expect(monitor.maxLagMs(10_000)).toBeGreaterThanOrEqual(300)
    // Two windows later the stall is history: not "now", still within a longer window.
    yield* Effect.sleep("2200 millis")
    expect(monitor.lagMs()).toBeLessThan(150)
    expect(monitor.maxLagMs(10_000)).toBeGreaterThanOrEqual(300)
  }).pipe(Effect.provide(LoadMonitor.Default))
)

import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Stream } from "effect"
import { InFlight } from "../../src/controller/in-flight.js"
import { ControllerLifecycle } from "../../src/controller/lifecycle.js"
import { RequestStats, successRate } from "../../src/controller/request-stats.js"
import { settle } from "./support/router-harness.js"

describe("ControllerLifecycle", () => {
  it.effect("starts idle, refuses requests until ready, and publishes every transition", () =>
    Effect.gen(function* () {
      const lifecycle = yield* ControllerLifecycle
      expect(yield* lifecycle.state).toBe("idle")
      expect(lifecycle.startedAt).toBeGreaterThan(0)
      const seen = yield* lifecycle.changes.pipe(Stream.take(4), Stream.runCollect, Effect.fork)
      yield* settle
      yield* lifecycle.transition("connecting")
      yield* lifecycle.transition("connecting")
      yield* lifecycle.transition("ready")
      yield* lifecycle.transition("draining")
      expect(Chunk.toReadonlyArray(yield* Fiber.join(seen))).toEqual(["idle", "connecting", "connecting", "ready"])
      expect(yield* lifecycle.state).toBe("draining")
    }).pipe(Effect.provide(ControllerLifecycle.Default))
  )

  it.effect("ensureAccepting succeeds only while ready", () =>
    Effect.gen(function* () {
      const lifecycle = yield* ControllerLifecycle
      for (const s of ["idle", "connecting", "registering", "starting", "draining", "stopping", "stopped"] as const) {
        yield* lifecycle.transition(s)
        const exit = yield* Effect.exit(lifecycle.ensureAccepting)
        expect(exit._tag, s).toBe("Failure")
      }
      yield* lifecycle.transition("ready")
      yield* lifecycle.ensureAccepting
      const error = yield* Effect.flip(lifecycle.transition("draining").pipe(Effect.zipRight(lifecycle.ensureAccepting)))
      expect(error._tag).toBe("ShuttingDown")
      expect(error.message).toContain("draining")
    }).pipe(Effect.provide(ControllerLifecycle.Default))
  )

  it.effect("stopped completes once forceStop is called, for every waiter", () =>
    Effect.gen(function* () {
      const lifecycle = yield* ControllerLifecycle
      const a = yield* Effect.fork(lifecycle.stopped)
      const b = yield* Effect.fork(lifecycle.stopped)
      yield* settle
      expect(a.unsafePoll()).toBeNull()
      expect(yield* lifecycle.forceStop).toBe(true)
      expect(yield* lifecycle.forceStop).toBe(false)
      yield* Fiber.join(a)
      yield* Fiber.join(b)
      yield* lifecycle.stopped
    }).pipe(Effect.provide(ControllerLifecycle.Default))
  )
})

describe("RequestStats", () => {
  it.effect("begin counts active and total; end moves one active request to its outcome", () =>
    Effect.gen(function* () {
      const stats = yield* RequestStats
      expect(yield* stats.snapshot).toEqual({ active: 0, total: 0, succeeded: 0, failed: 0, cancelled: 0 })
      yield* stats.begin
      yield* stats.begin
      yield* stats.begin
      yield* stats.begin
      expect(yield* stats.snapshot).toEqual({ active: 4, total: 4, succeeded: 0, failed: 0, cancelled: 0 })
      yield* stats.end("succeeded")
      yield* stats.end("failed")
      yield* stats.end("cancelled")
      expect(yield* stats.snapshot).toEqual({ active: 1, total: 4, succeeded: 1, failed: 1, cancelled: 1 })
    }).pipe(Effect.provide(RequestStats.Default))
  )

  it("successRate: succeeded over finished (cancelled left out), 1 before anything finished", () => {
    const base = { active: 0, total: 0, succeeded: 0, failed: 0, cancelled: 0 }
    expect(successRate(base)).toBe(1)
    expect(successRate({ ...base, cancelled: 3 })).toBe(1)
    expect(successRate({ ...base, succeeded: 3, failed: 1, cancelled: 10 })).toBe(0.75)
    expect(successRate({ ...base, failed: 2 })).toBe(0)
  })
})

describe("InFlight", () => {
  it.effect("reserve / release per worker; a count never goes below zero", () =>
    Effect.gen(function* () {
      const inFlight = yield* InFlight
      inFlight.reserve("w1")
      inFlight.reserve("w1")
      inFlight.reserve("w2")
      expect([inFlight.own("w1"), inFlight.own("w2"), inFlight.total()]).toEqual([2, 1, 3])
      inFlight.release("w2")
      inFlight.release("w2")
      expect([inFlight.own("w1"), inFlight.own("w2"), inFlight.total()]).toEqual([2, 0, 2])
    }).pipe(Effect.provide(InFlight.Default))
  )

  it.effect("load adds what the worker reports beyond this controller's own requests (other controllers')", () =>
    Effect.gen(function* () {
      const inFlight = yield* InFlight
      inFlight.reserve("w1")
      inFlight.reported("w1", 4) // 1 is ours: 3 belong to others
      expect(inFlight.load("w1")).toBe(4)
      inFlight.reserve("w1")
      expect(inFlight.load("w1")).toBe(5)
      inFlight.reported("w1", 2, 2) // the worker says 2 of its 2 are ours
      expect(inFlight.load("w1")).toBe(2)
      inFlight.reported("w1", 1) // a stale report below our own count never makes load negative
      expect(inFlight.load("w1")).toBe(2)
      inFlight.reported("w1", 5)
      inFlight.forget("w1")
      expect(inFlight.load("w1")).toBe(2)
    }).pipe(Effect.provide(InFlight.Default))
  )
})

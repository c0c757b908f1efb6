import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Metric } from "effect"
import { withRuntimeMetrics } from "../src/roles.js"

/** Effect's own counter of started fibers (the same key as the runtime's). */
const started = Metric.counter("effect_fiber_started", { incremental: true })

const forkTen = Effect.forEach(Array.from({ length: 10 }), () => Effect.fork(Effect.void)).pipe(
  Effect.flatMap((fibers) => Fiber.joinAll(fibers))
)

const countedForks = (runtime: boolean) =>
  Effect.gen(function* () {
    const before = (yield* Metric.value(started)).count
    yield* forkTen.pipe(withRuntimeMetrics({ metrics: { runtime } }))
    return (yield* Metric.value(started)).count - before
  })

describe("withRuntimeMetrics", () => {
  it.effect("leaves Effect's fiber metrics off unless metrics.runtime is true", () =>
    Effect.gen(function* () {
      expect(yield* countedForks(false)).toBe(0)
      expect(yield* countedForks(true)).toBeGreaterThanOrEqual(10)
    })
  )
})

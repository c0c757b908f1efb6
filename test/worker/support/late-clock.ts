import { Clock, Duration, Effect } from "effect"

/**
 * The current clock (the TestClock in `it.effect`), except that every `sleep` wakes `lateByMs`
 * after it was due: a process whose timers fire late (a busy event loop, a suspended laptop). Time
 * still moves only with `TestClock.adjust`. Provide it to the code under test with `Effect.withClock`.
 *
 * (The TestClock alone cannot make a wake-up late: `adjust` by several intervals at once wakes each
 * sleeper at its own due time, one after the other.)
 */
export const lateClock = (lateByMs: number): Effect.Effect<Clock.Clock> =>
  Effect.map(
    Effect.clock,
    (base): Clock.Clock => ({
      [Clock.ClockTypeId]: Clock.ClockTypeId,
      unsafeCurrentTimeMillis: () => base.unsafeCurrentTimeMillis(),
      unsafeCurrentTimeNanos: () => base.unsafeCurrentTimeNanos(),
      currentTimeMillis: Effect.sync(() => base.unsafeCurrentTimeMillis()),
      currentTimeNanos: Effect.sync(() => base.unsafeCurrentTimeNanos()),
      sleep: (duration) => base.sleep(Duration.sum(duration, Duration.millis(lateByMs)))
    })
  )

import { Effect, Exit } from "effect"

/**
 * Runs `check` until it succeeds — with `true` when it answers a boolean — (failures and thrown
 * assertions retry) or `timeoutMs` of wall-clock time passed, then fails with the last failure.
 * Usable in TestClock tests too: it waits on the wall clock, not on the Effect one.
 */
export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  options: { readonly timeoutMs?: number; readonly intervalMs?: number } = {}
): Effect.Effect<A, E | Error, R> =>
  Effect.gen(function* () {
    const timeoutMs = options.timeoutMs ?? 5_000
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const result = yield* Effect.exit(check)
      if (Exit.isSuccess(result) && result.value !== false) return result.value
      if (Date.now() > deadline) {
        return yield* Exit.isFailure(result) ? result : Effect.fail(new Error(`condition not met within ${timeoutMs} ms`))
      }
      yield* realSleep(options.intervalMs ?? 10)
    }
  })

/** Waits `ms` of wall-clock time whatever clock the test runs on. */
export const realSleep = (ms: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const handle = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(handle))
  })

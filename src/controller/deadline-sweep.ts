import { Effect } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterConfig } from "../config/schema.js"

/** Something with deadlines: asked, on every tick, whether one has passed at `now` (epoch ms). */
export interface Deadline {
  readonly check: (now: number) => void
}

/**
 * How often deadlines are checked: a twentieth of the shortest limit they enforce, between 10 and
 * 250 ms, so a deadline is noticed at most 5 % (and at most 250 ms) after it passed. With the
 * defaults (30 s limits) that is four cheap passes a second.
 */
export const sweepTickMs = (c: ClusterConfig["controller"]): number => {
  const limits = [c.firstTokenTimeoutMs, c.streamIdleTimeoutMs, c.requestTimeoutMs, c.queue.maxWaitMs].filter((ms) => ms > 0)
  return Math.min(250, Math.max(10, Math.floor(Math.min(...limits) / 20)))
}

/**
 * One scheduled fiber that enforces every deadline of the controller — each stream's first-token,
 * inactivity and whole-request limits, each queued request's wait — instead of a timer or a
 * watchdog fiber per request. Entries join and leave with plain calls (no Effect, no allocation
 * beyond the set's), so a request costs nothing here but its entry. Time is the Effect `Clock`
 * (read with `unsafeCurrentTimeMillis` from callbacks), so `TestClock` drives it in tests.
 */
export class DeadlineSweep extends Effect.Service<DeadlineSweep>()("controller/DeadlineSweep", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const clock = yield* Effect.clock
    const tickMs = sweepTickMs(config.controller)
    const entries = new Set<Deadline>()
    const now = () => clock.unsafeCurrentTimeMillis()
    const sweep = Effect.sync(() => {
      const at = now()
      for (const entry of entries) entry.check(at)
    })
    yield* Effect.sleep(tickMs).pipe(Effect.zipRight(sweep), Effect.forever, Effect.forkScoped)
    return {
      tickMs,
      /** The Effect clock's time, for callbacks that record when things happened. */
      now,
      /** Checks `entry` on every tick until the returned function is called. */
      add: (entry: Deadline): (() => void) => {
        entries.add(entry)
        return () => {
          entries.delete(entry)
        }
      },
      /** How many entries are checked now. */
      size: () => entries.size
    } as const
  })
}) {}

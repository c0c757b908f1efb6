import { Effect, Ref } from "effect"

export interface RequestCountsSnapshot {
  readonly active: number
  readonly total: number
  readonly succeeded: number
  readonly failed: number
  /** Ended because the client went away: neither a success nor the cluster's failure. */
  readonly cancelled: number
}

export type RequestOutcome = "succeeded" | "failed" | "cancelled"

const empty: RequestCountsSnapshot = { active: 0, total: 0, succeeded: 0, failed: 0, cancelled: 0 }

/** Fraction of finished requests that succeeded; 1 before any finished (nothing has failed yet). */
export const successRate = (s: RequestCountsSnapshot): number => {
  const finished = s.succeeded + s.failed
  return finished === 0 ? 1 : s.succeeded / finished
}

/** The controller's request statistics (active, total, succeeded, failed) for the status query. */
export class RequestStats extends Effect.Service<RequestStats>()("controller/RequestStats", {
  effect: Effect.gen(function* () {
    const ref = yield* Ref.make(empty)
    return {
      snapshot: Ref.get(ref),
      begin: Ref.update(ref, (s) => ({ ...s, active: s.active + 1, total: s.total + 1 })),
      end: (outcome: RequestOutcome) =>
        Ref.update(ref, (s) => ({ ...s, active: s.active - 1, [outcome]: s[outcome] + 1 }))
    } as const
  })
}) {}

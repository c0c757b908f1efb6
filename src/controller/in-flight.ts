import { Effect, type Stream, SubscriptionRef } from "effect"

/**
 * Requests the controller has dispatched (or reserved a slot for) per worker id. The balancer reads
 * it as the controller's own view of load; the admission queue waits on its changes for capacity.
 */
export class InFlight extends Effect.Service<InFlight>()("controller/InFlight", {
  effect: Effect.gen(function* () {
    const counts = yield* SubscriptionRef.make<ReadonlyMap<string, number>>(new Map())

    const adjust = (workerId: string, delta: number) =>
      SubscriptionRef.update(counts, (current) => {
        const next = new Map(current)
        const value = (current.get(workerId) ?? 0) + delta
        if (value <= 0) next.delete(workerId)
        else next.set(workerId, value)
        return next
      })

    return {
      /** The current count per worker id. */
      snapshot: SubscriptionRef.get(counts),
      reserve: (workerId: string) => adjust(workerId, 1),
      release: (workerId: string) => adjust(workerId, -1),
      /** Emits the counts now and after every change. */
      changes: counts.changes as Stream.Stream<ReadonlyMap<string, number>>
    } as const
  })
}) {}

import { Effect } from "effect"

/**
 * The load of each worker as this controller sees it: the requests it has itself dispatched (or
 * reserved a slot for) there, plus an estimate of what other controllers run on it, learned from
 * what the worker reports (its heartbeats). Plain counters read and written synchronously: the
 * admission queue consults them on every request and every slot release.
 */
export class InFlight extends Effect.Service<InFlight>()("controller/InFlight", {
  sync: () => {
    const mine = new Map<string, number>()
    const others = new Map<string, number>()
    let total = 0

    const own = (workerId: string): number => mine.get(workerId) ?? 0
    return {
      /** Requests this controller runs on `workerId`. */
      own,
      /** Requests this controller runs anywhere. */
      total: (): number => total,
      /** `own` plus what others run there, as last reported. */
      load: (workerId: string): number => own(workerId) + (others.get(workerId) ?? 0),
      reserve: (workerId: string): void => {
        mine.set(workerId, own(workerId) + 1)
        total++
      },
      release: (workerId: string): void => {
        const value = own(workerId) - 1
        if (value < 0) return
        if (value === 0) mine.delete(workerId)
        else mine.set(workerId, value)
        total--
      },
      /**
       * The worker said it runs `active` requests, `ownAtWorker` of them this controller's (when it
       * knows; else this controller's count now stands in): the rest belongs to other controllers.
       */
      reported: (workerId: string, active: number, ownAtWorker?: number): void => {
        const rest = Math.max(0, active - (ownAtWorker ?? own(workerId)))
        if (rest === 0) others.delete(workerId)
        else others.set(workerId, rest)
      },
      /** Forgets what was reported for a worker that left. */
      forget: (workerId: string): void => {
        others.delete(workerId)
      }
    } as const
  }
}) {}

import { REPORTED_CONTROLLERS } from "../domain/worker.js"

/**
 * The requests this worker runs, by the controller that owns them (the request's `controllerId`,
 * issue 14). Three readers:
 *
 * - the ack and the `busy` refusal say how many of the asking controller's requests run here
 *   (`activeForController`), and the heartbeat says it for every controller (`activeByController`),
 *   so that several controllers balance on the worker's own count instead of piling onto it;
 * - the owner watch (`owner-watch.ts`) probes each controller that owns a running request and, when
 *   one is gone, stops all of its requests at once with `stopAll`.
 *
 * Plain synchronous bookkeeping, called from the inference handler as a request takes and gives back
 * its slot: no Effect, a map operation per request.
 */
export class RequestOwners {
  private readonly owners = new Map<string, Map<string, () => void>>()

  /**
   * `requestId` of `controllerId` holds a slot; `stop` ends it (as a cancel does). Returns the
   * function that forgets it (idempotent), to call when its slot is given back.
   */
  add(controllerId: string, requestId: string, stop: () => void): () => void {
    let requests = this.owners.get(controllerId)
    if (requests === undefined) {
      requests = new Map()
      this.owners.set(controllerId, requests)
    }
    requests.set(requestId, stop)
    const owned = requests
    return () => {
      if (owned.get(requestId) !== stop) return
      owned.delete(requestId)
      if (owned.size === 0 && this.owners.get(controllerId) === owned) this.owners.delete(controllerId)
    }
  }

  /** Requests of `controllerId` holding a slot now (0 for an unknown or absent id). */
  count(controllerId: string | undefined): number {
    return controllerId === undefined ? 0 : (this.owners.get(controllerId)?.size ?? 0)
  }

  /** The controllers that own a running request now. */
  controllers(): ReadonlyArray<string> {
    return [...this.owners.keys()]
  }

  /** Stops every request of `controllerId`; how many there were. */
  stopAll(controllerId: string): number {
    const requests = this.owners.get(controllerId)
    if (requests === undefined) return 0
    const stops = [...requests.values()]
    for (const stop of stops) stop()
    return stops.length
  }

  /** Counts per controller for a heartbeat: the `limit` busiest ones (a heartbeat stays small). */
  byController(limit: number = REPORTED_CONTROLLERS): Record<string, number> {
    const entries = [...this.owners.entries()].map(([id, requests]) => [id, requests.size] as const)
    if (entries.length > limit) entries.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    return Object.fromEntries(entries.slice(0, limit))
  }
}

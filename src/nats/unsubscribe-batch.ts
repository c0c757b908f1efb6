/**
 * Unsubscribes later, in batches (issue 10). Every streamed request ends its `response.{id}`
 * subscription, and an UNSUB of its own was one more socket write — and one more wake-up of
 * nats-server — per request: half of the controller's NATS writes at concurrency 1. The
 * subscriptions handed here have stopped delivering already (the transport's callback drops their
 * messages); their UNSUBs go out with the next SUB (`flush` just before subscribing: nats.js sends
 * both in one write) or after `delayMs` when no SUB comes.
 */
export interface Unsubscribable {
  readonly unsubscribe: () => void
}

export interface UnsubscribeBatch {
  /** Unsubscribe `sub` with the next batch. */
  readonly add: (sub: Unsubscribable) => void
  /** Unsubscribe every pending subscription now. */
  readonly flush: () => void
}

export const makeUnsubscribeBatch = (delayMs: number): UnsubscribeBatch => {
  let pending: Array<Unsubscribable> = []
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = () => {
    if (timer !== undefined) {
      clearTimeout(timer)
      timer = undefined
    }
    if (pending.length === 0) return
    const subs = pending
    pending = []
    for (const sub of subs) {
      try {
        sub.unsubscribe()
      } catch {
        // The connection closed in the meantime: its subscriptions went with it.
      }
    }
  }
  return {
    add: (sub) => {
      pending.push(sub)
      if (timer === undefined) {
        timer = setTimeout(flush, delayMs)
        // Pending UNSUBs never keep a process alive: closing the connection ends its subscriptions.
        timer.unref()
      }
    },
    flush
  }
}

/**
 * The requests waiting for a slot, per model, in the order they leave: higher priority first, then
 * first come first served. Plain data structure, no Effect: every operation the admission queue
 * performs per event is O(1) or O(priority levels), never a scan or a sort of the whole queue.
 *
 * Removal is lazy: a waiter that leaves early (timed out, client gone) is only marked; the next
 * pass over its level skips it.
 */

export interface WaitingEntry {
  readonly seq: number
  readonly priority: number
  /** Epoch ms it started waiting (for the queue's max wait). */
  readonly since: number
  /** Set once it left the queue (served, timed out, gone). */
  readonly left: boolean
}

interface Level<W extends WaitingEntry> {
  readonly priority: number
  items: Array<W>
  head: number
}

/** How many waiters `find` looks at per level before giving up: a bound on one wake-up's cost. */
export const SCAN_LIMIT = 64

/** The waiters of one model. */
export class ModelLine<W extends WaitingEntry> {
  /** Priority levels, highest first; a new priority is rare, so insertion keeps it sorted. */
  private readonly levels: Array<Level<W>> = []
  private waiting = 0

  get size(): number {
    return this.waiting
  }

  /**
   * Adds a waiter in leaving order. A new request goes last in its level (O(1)); one that waited
   * before (sent back by a `busy` worker, issue 14, with its first `since`) goes back to its place by
   * arrival — a binary search and an insertion, on that rare path only — so that each level stays
   * in order of `since`, which `expired` relies on.
   */
  add(waiter: W): void {
    let level = this.levels.find((l) => l.priority === waiter.priority)
    if (level === undefined) {
      level = { priority: waiter.priority, items: [], head: 0 }
      const at = this.levels.findIndex((l) => l.priority < waiter.priority)
      if (at < 0) this.levels.push(level)
      else this.levels.splice(at, 0, level)
    }
    const items = level.items
    const last = items[items.length - 1]
    if (last === undefined || arrivedBefore(last, waiter) <= 0) {
      items.push(waiter)
    } else {
      let lo = level.head
      let hi = items.length
      while (lo < hi) {
        const mid = (lo + hi) >>> 1
        if (arrivedBefore(items[mid] as W, waiter) <= 0) lo = mid + 1
        else hi = mid
      }
      items.splice(lo, 0, waiter)
    }
    this.waiting++
  }

  /** A waiter of this line left (it must have been added and not counted as left yet). */
  gone(): void {
    this.waiting--
  }

  /**
   * The first waiter in leaving order that `fits`, without removing it; skips (and drops) waiters
   * that already left. Looks at most `SCAN_LIMIT` live waiters per level.
   */
  find(fits: (waiter: W) => boolean): W | undefined {
    for (const level of this.levels) {
      this.compact(level)
      const end = Math.min(level.items.length, level.head + SCAN_LIMIT)
      for (let i = level.head; i < end; i++) {
        const waiter = level.items[i] as W
        if (!waiter.left && fits(waiter)) return waiter
      }
    }
    return undefined
  }

  /** Waiters that have waited since before `cutoff`, oldest first per level (they are in arrival order). */
  expired(cutoff: number): Array<W> {
    const out: Array<W> = []
    for (const level of this.levels) {
      this.compact(level)
      for (let i = level.head; i < level.items.length; i++) {
        const waiter = level.items[i] as W
        if (waiter.since > cutoff) break
        if (!waiter.left) out.push(waiter)
      }
    }
    return out
  }

  /** Every waiter still waiting, in leaving order. */
  all(): Array<W> {
    const out: Array<W> = []
    for (const level of this.levels) {
      for (let i = level.head; i < level.items.length; i++) {
        const waiter = level.items[i] as W
        if (!waiter.left) out.push(waiter)
      }
    }
    return out
  }

  /** Drops the waiters that left from the front of a level; shrinks the array once half is dead. */
  private compact(level: Level<W>): void {
    while (level.head < level.items.length && (level.items[level.head] as W).left) level.head++
    if (level.head > 64 && level.head * 2 > level.items.length) {
      level.items = level.items.slice(level.head)
      level.head = 0
    }
  }
}

/** Compares two waiters by arrival: negative when `a` started waiting first. */
export const arrivedBefore = (a: WaitingEntry, b: WaitingEntry): number => a.since - b.since || a.seq - b.seq

/** Compares two waiters by leaving order: negative when `a` leaves first (priority, then arrival). */
export const leavesBefore = (a: WaitingEntry, b: WaitingEntry): number => b.priority - a.priority || arrivedBefore(a, b)

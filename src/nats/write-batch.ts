/**
 * One socket write for the NATS operations of one turn of the event loop (issue 10). nats.js
 * writes what it has buffered in a microtask, and Node runs the microtasks after each socket's
 * callback: so each HTTP request read in a turn, even at concurrency 1,024, got a write of its own
 * to nats-server (its SUB and its PUB), and nats-server forwarded them to the workers one by one,
 * which woke up for each and answered each with a write of their own. The operations handed here
 * run, in order, in `setImmediate`: after every callback of the turn's I/O, so a turn's requests
 * leave in one write, reach a worker in one read, and its answers leave in one write too.
 */
export interface WriteBatch {
  /** Runs `op` (a publish or a subscribe on the connection) at the end of this turn's I/O, after the ones before it. */
  readonly run: (op: () => void) => void
  /** Runs every pending operation now (before a flush or a drain of the connection). */
  readonly flush: () => void
}

export const makeWriteBatch = (
  /** An operation that threw (each handles its own failures: this is a bug's last stop, not an error path). */
  onDefect: (cause: unknown) => void,
  schedule: (callback: () => void) => void = setImmediate
): WriteBatch => {
  let pending: Array<() => void> = []
  let scheduled = false
  const flush = () => {
    // Operations added by the ones running go out in this run too.
    while (pending.length > 0) {
      const ops = pending
      pending = []
      for (const op of ops) {
        try {
          op()
        } catch (cause) {
          onDefect(cause)
        }
      }
    }
    scheduled = false
  }
  return {
    run: (op) => {
      pending.push(op)
      if (scheduled) return
      scheduled = true
      schedule(flush)
    },
    flush
  }
}

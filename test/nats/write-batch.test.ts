import { describe, expect, it } from "vitest"
import { makeWriteBatch } from "../../src/nats/write-batch.js"

/** A scheduler the test drives: the callbacks `setImmediate` would have run at the turn's end. */
const manualTurns = () => {
  const due: Array<() => void> = []
  return { schedule: (callback: () => void) => void due.push(callback), endTurn: () => due.splice(0).forEach((f) => f()), scheduled: () => due.length }
}

const noDefect = (cause: unknown) => {
  throw new Error(`an operation threw: ${String(cause)}`)
}

describe("write batch (one socket write for a turn's NATS operations)", () => {
  it("runs nothing during the turn, then every operation in order, scheduling one run per turn", () => {
    const turns = manualTurns()
    const batch = makeWriteBatch(noDefect, turns.schedule)
    const ran: Array<string> = []
    batch.run(() => ran.push("SUB a"))
    batch.run(() => ran.push("PUB a"))
    batch.run(() => ran.push("SUB b"))
    expect(ran).toEqual([])
    expect(turns.scheduled()).toBe(1)
    turns.endTurn()
    expect(ran).toEqual(["SUB a", "PUB a", "SUB b"])
    // The next turn schedules again.
    batch.run(() => ran.push("PUB b"))
    expect(turns.scheduled()).toBe(1)
    turns.endTurn()
    expect(ran).toEqual(["SUB a", "PUB a", "SUB b", "PUB b"])
  })

  it("flush runs what is pending at once (before a flush or a drain of the connection), and the turn's end then finds nothing", () => {
    const turns = manualTurns()
    const batch = makeWriteBatch(noDefect, turns.schedule)
    const ran: Array<number> = []
    batch.run(() => ran.push(1))
    batch.flush()
    expect(ran).toEqual([1])
    turns.endTurn()
    expect(ran).toEqual([1])
    // After a flush, a new operation schedules a new run.
    batch.run(() => ran.push(2))
    expect(turns.scheduled()).toBe(1)
    turns.endTurn()
    expect(ran).toEqual([1, 2])
  })

  it("an operation added while the batch runs goes out in the same run, after the others", () => {
    const turns = manualTurns()
    const batch = makeWriteBatch(noDefect, turns.schedule)
    const ran: Array<string> = []
    batch.run(() => {
      ran.push("first")
      batch.run(() => ran.push("added by first"))
    })
    batch.run(() => ran.push("second"))
    turns.endTurn()
    expect(ran).toEqual(["first", "second", "added by first"])
    expect(turns.scheduled()).toBe(0)
  })

  it("an operation that throws is reported and stops neither the others nor later turns", () => {
    const turns = manualTurns()
    const defects: Array<unknown> = []
    const batch = makeWriteBatch((cause) => defects.push(cause), turns.schedule)
    const ran: Array<string> = []
    batch.run(() => ran.push("before"))
    batch.run(() => {
      throw new Error("a bug")
    })
    batch.run(() => ran.push("after"))
    turns.endTurn()
    expect(ran).toEqual(["before", "after"])
    expect(defects).toEqual([new Error("a bug")])
    batch.run(() => ran.push("next turn"))
    expect(turns.scheduled()).toBe(1)
    turns.endTurn()
    expect(ran).toEqual(["before", "after", "next turn"])
  })

  it("runs at the end of the event loop's turn by default (setImmediate), after the turn's other callbacks", async () => {
    const batch = makeWriteBatch(noDefect)
    const order: Array<string> = []
    batch.run(() => order.push("batch"))
    queueMicrotask(() => order.push("microtask"))
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(order).toEqual(["microtask", "batch"])
  })
})

import { describe, expect, it } from "@effect/vitest"
import { leavesBefore, ModelLine, SCAN_LIMIT, type WaitingEntry } from "../../src/controller/waiting-room.js"

interface W extends WaitingEntry {
  left: boolean
  readonly tag: string
}

let seq = 0
const waiter = (tag: string, priority = 0, since = 0): W => ({ seq: seq++, priority, since, left: false, tag })

describe("ModelLine", () => {
  it("finds in leaving order: higher priority first, then first come first served", () => {
    const line = new ModelLine<W>()
    const a = waiter("a")
    const b = waiter("b", 5)
    const c = waiter("c")
    const d = waiter("d", 5)
    for (const w of [a, b, c, d]) line.add(w)
    expect(line.size).toBe(4)
    const order: Array<string> = []
    for (let w = line.find(() => true); w !== undefined; w = line.find(() => true)) {
      order.push(w.tag)
      w.left = true
      line.gone()
    }
    expect(order).toEqual(["b", "d", "a", "c"])
    expect(line.size).toBe(0)
    expect([a, b].sort(leavesBefore).map((w) => w.tag)).toEqual(["b", "a"])
  })

  it("skips waiters that do not fit, and those that left; looks at most SCAN_LIMIT live waiters per level", () => {
    const line = new ModelLine<W>()
    const misfits = Array.from({ length: SCAN_LIMIT }, (_, i) => waiter(`misfit${i}`))
    for (const w of misfits) line.add(w)
    const fits = waiter("fits")
    line.add(fits)
    expect(line.find((w) => w.tag === "fits")).toBeUndefined()
    const first = misfits[0] as W
    first.left = true
    line.gone()
    expect(line.find((w) => w.tag === "fits")).toBe(fits)
  })

  it("expired: the waiters that waited since before the cutoff, oldest first, without the ones that left", () => {
    const line = new ModelLine<W>()
    const old1 = waiter("old1", 0, 100)
    const old2 = waiter("old2", 0, 200)
    const fresh = waiter("fresh", 0, 900)
    const oldHigh = waiter("oldHigh", 3, 150)
    for (const w of [old1, old2, fresh, oldHigh]) line.add(w)
    old2.left = true
    expect(line.expired(500).map((w) => w.tag)).toEqual(["oldHigh", "old1"])
    expect(line.all().map((w) => w.tag)).toEqual(["oldHigh", "old1", "fresh"])
  })

  it("stays compact: a long line whose head keeps leaving does not grow without bound", () => {
    const line = new ModelLine<W>()
    for (let i = 0; i < 10_000; i++) {
      const w = waiter(`w${i}`)
      line.add(w)
      const head = line.find(() => true)
      if (head !== undefined) {
        head.left = true
        line.gone()
      }
    }
    expect(line.size).toBe(0)
    expect(line.all()).toEqual([])
  })
})

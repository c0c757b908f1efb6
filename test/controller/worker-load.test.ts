import { describe, expect, it } from "@effect/vitest"
import { WorkerId } from "../../src/domain/ids.js"
import { ModelLine, leavesBefore, type WaitingEntry } from "../../src/controller/waiting-room.js"
import { fromAck, fromBusy, fromHeartbeat, reportedActive } from "../../src/controller/worker-load.js"
import { metrics } from "./support/fixtures.js"

describe("worker-load: what a worker's messages say about its load (issue 14)", () => {
  it("a heartbeat: active and this controller's share; a worker that names controllers but not us runs none of ours", () => {
    const m = { ...metrics(3), activeByController: { "ctl-a": 2, "ctl-b": 1 }, maxConcurrent: 4 }
    expect(fromHeartbeat(m, "ctl-a")).toEqual({ active: 3, ownAtWorker: 2, maxConcurrent: 4 })
    expect(fromHeartbeat(m, "ctl-c")).toEqual({ active: 3, ownAtWorker: 0, maxConcurrent: 4 })
    // An older worker: unknown share (InFlight then takes this controller's own count).
    expect(fromHeartbeat(metrics(3), "ctl-a")).toEqual({ active: 3, ownAtWorker: undefined, maxConcurrent: undefined })
  })

  it("an ack: its counts, or nothing from an older worker", () => {
    const workerId = WorkerId.make("w1")
    expect(fromAck({ accepted: true, workerId, active: 2, activeForController: 1 })).toEqual({ active: 2, ownAtWorker: 1 })
    expect(fromAck({ accepted: true, workerId, active: 2 })).toEqual({ active: 2, ownAtWorker: undefined })
    expect(fromAck({ accepted: true, workerId })).toBeUndefined()
  })

  it("a busy refusal reports the worker full whatever its counts (draining, fewer slots than we believe, our cancelled requests still running)", () => {
    const busy = (load: { active?: number; activeForController?: number }) =>
      ({ accepted: false, reason: "busy", message: "full", ...load }) as const
    /** The load this controller gives the worker once the refused request's slot is back. */
    const loadAfter = (report: { active: number; ownAtWorker: number | undefined }, ownNow: number) =>
      ownNow - 1 + Math.max(0, report.active - (report.ownAtWorker ?? ownNow - 1))
    const cases = [
      // Full by its own count: 2 of 2, 1 of them ours (ours: 1 + the refused one).
      { reply: busy({ active: 2, activeForController: 1 }), capacity: 2, ownNow: 2, others: 1 },
      // Draining with nothing running.
      { reply: busy({ active: 0, activeForController: 0 }), capacity: 4, ownNow: 1, others: 4 },
      // It still runs 4 of ours, one of which we cancelled (we count 3 + the refused one).
      { reply: busy({ active: 4, activeForController: 4 }), capacity: 4, ownNow: 4, others: 1 },
      // No counts (an older worker).
      { reply: busy({}), capacity: 3, ownNow: 2, others: 2 },
      { reply: busy({}), capacity: 3, ownNow: 1, others: 3 },
      // More of the others' than the capacity: kept as reported.
      { reply: busy({ active: 6, activeForController: 0 }), capacity: 4, ownNow: 1, others: 6 }
    ]
    for (const { reply, capacity, ownNow, others } of cases) {
      const report = fromBusy(reply, capacity, ownNow)
      expect(report.ownAtWorker).toBe(ownNow - 1)
      expect(report.active - (report.ownAtWorker ?? 0)).toBe(others)
      expect(loadAfter(report, ownNow)).toBeGreaterThanOrEqual(capacity)
    }
  })

  it("reportedActive: a worker's own max_concurrent below the capacity we give it counts as load", () => {
    expect(reportedActive({ active: 1, ownAtWorker: 1 }, 4)).toBe(1)
    expect(reportedActive({ active: 1, ownAtWorker: 1, maxConcurrent: 4 }, 4)).toBe(1)
    expect(reportedActive({ active: 1, ownAtWorker: 1, maxConcurrent: 2 }, 4)).toBe(3)
    expect(reportedActive({ active: 1, ownAtWorker: 1, maxConcurrent: 8 }, 4)).toBe(1)
  })
})

interface Entry extends WaitingEntry {
  readonly name: string
  left: boolean
}

const entry = (name: string, seq: number, since: number, priority = 0): Entry => ({ name, seq, since, priority, left: false })

describe("ModelLine: a requeued waiter keeps its place by first arrival (issue 14)", () => {
  it("inserted by arrival among later ones, so that leaving order and the max-wait scan stay right", () => {
    const line = new ModelLine<Entry>()
    const a = entry("a", 1, 100)
    const b = entry("b", 2, 200)
    const c = entry("c", 3, 300)
    line.add(a)
    line.add(b)
    line.add(c)
    // Sent back by a busy worker: first asked at 150, before b and c.
    const back = entry("back", 9, 150)
    line.add(back)
    expect(line.all().map((e) => e.name)).toEqual(["a", "back", "b", "c"])
    a.left = true
    line.gone()
    expect(line.find(() => true)?.name).toBe("back")
    // Everything that waited since before 160: `back` is found though it was added last.
    expect(line.expired(160).map((e) => e.name)).toEqual(["back"])
    expect(leavesBefore(back, b)).toBeLessThan(0)
    // Priority still comes first.
    expect(leavesBefore(entry("vip", 10, 999, 5), back)).toBeLessThan(0)
    expect(line.size).toBe(3)
  })
})

import { describe, expect, it } from "@effect/vitest"
import { analyseTail, formatTail, type HopKind, type HopTrace, SEGMENTS } from "../../bench/tail-report.js"

/** One request's points, `at` ms after `start`: the controller's and the worker's. */
const request = (start: number, hops: { request: number; dispatch: number; atWorker: number; tokens: number; back: number; respond: number }) => ({
  controller: [
    ["request", start + hops.request],
    ["dispatch", start + hops.dispatch],
    ["busIn", start + hops.back],
    ["respond", start + hops.respond]
  ] as Array<[HopKind, number]>,
  worker: [
    ["busIn", start + hops.atWorker],
    ["tokens", start + hops.tokens]
  ] as Array<[HopKind, number]>
})

const normal = { request: 0.1, dispatch: 0.3, atWorker: 0.5, tokens: 0.8, back: 0.9, respond: 1.0 }
// Slow: the tokens took 4 ms longer to reach the controller.
const late = { ...normal, back: 4.9, respond: 5.0 }

describe("bench: the TTFT tail, hop by hop", () => {
  const a = request(1_000, normal)
  const b = request(2_000, normal)
  const c = request(3_000, late)
  const controller: HopTrace = { role: "controller", hops: [...a.controller, ...b.controller, ...c.controller], gc: [[3_002, 1.5]] }
  const worker: HopTrace = { role: "worker", hops: [...a.worker, ...b.worker, ...c.worker], gc: [] }
  const requests = [
    { startedAt: 1_000, ttftMs: 1.1 },
    { startedAt: 2_000, ttftMs: 1.1 },
    { startedAt: 3_000, ttftMs: 5.1 },
    // No controller point in its time: not traced.
    { startedAt: 9_000, ttftMs: 1 }
  ]
  const analysis = analyseTail(requests, [controller], [worker], [{ process: "controller", gc: controller.gc }, { process: "worker-1", gc: [] }], 3)

  it("splits each TTFT into its hops and finds the one that grew in the slow request", () => {
    expect(analysis.requests).toBe(4)
    expect(analysis.matched).toBe(3)
    expect(analysis.slow).toBe(1)
    const p50 = analysis.segments.map((s) => Number(s.p50Ms.toFixed(3)))
    expect(p50).toEqual([0.1, 0.2, 0.2, 0.3, 0.1, 0.1, 0.1])
    const grown = analysis.segments.find((s) => s.grewMost > 0)
    expect(grown?.name).toBe(SEGMENTS[4])
    expect(grown?.slowExcessMs).toBeCloseTo(4, 6)
    expect(analysis.segments.filter((s) => s.name !== SEGMENTS[4]).every((s) => s.slowExcessMs < 1e-9)).toBe(true)
  })

  it("says which process's GC overlapped the slow requests", () => {
    const byName = Object.fromEntries(analysis.gc.map((g) => [g.process, g]))
    expect(byName["controller"]?.slowShare).toBe(1)
    expect(byName["controller"]?.allShare).toBeCloseTo(1 / 3, 6)
    expect(byName["worker-1"]?.slowShare).toBe(0)
    expect(analysis.slowWithoutGcShare).toBe(0)
    expect(formatTail(analysis)).toContain(`| ${SEGMENTS[4]} | 0.100 | 4.10 | 4.00 | 1 |`)
  })
})

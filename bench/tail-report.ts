/**
 * `--scenario tail`'s analysis (pure): where the time to first token of each request at
 * concurrency 1 went, hop by hop, from the points bench/hop-trace.ts notes in the controller and
 * the workers and the client's own timings — and, for the slow requests (the tail), which hop grew
 * and whether a garbage collection in some process overlapped them.
 */
import { percentile } from "./load.js"

export type HopKind = "request" | "respond" | "busIn" | "busOut" | "dispatch" | "tokens"

/** What hop-trace.ts writes per process: points and GCs (start, duration), epoch ms. */
export interface HopTrace {
  readonly role: "controller" | "worker"
  readonly hops: ReadonlyArray<readonly [HopKind, number]>
  readonly gc: ReadonlyArray<readonly [number, number]>
}

/** A request as the client saw it: when it started writing (epoch ms), and its TTFT. */
export interface TimedRequest {
  readonly startedAt: number
  readonly ttftMs: number
}

/** The hops of a TTFT, in order; each ends where the next starts. */
export const SEGMENTS = [
  "client → controller (request read)",
  "controller: request → dispatch",
  "bus → worker",
  "worker: request → tokens",
  "bus → controller",
  "controller: tokens → response",
  "controller → client (first token read)"
] as const

/** A process's GCs, by name: "controller", "worker-1", ..., "load generator". */
export type GcByProcess = ReadonlyArray<{ readonly process: string; readonly gc: ReadonlyArray<readonly [number, number]> }>

/** Times of one kind, ascending. */
const times = (traces: ReadonlyArray<HopTrace>, kind: HopKind): Array<number> =>
  traces
    .flatMap((t) => t.hops.filter(([k]) => k === kind).map(([, at]) => at))
    .sort((a, b) => a - b)

/** The first time in `sorted` within [from, to], or undefined. */
const firstIn = (sorted: ReadonlyArray<number>, from: number, to: number): number | undefined => {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if ((sorted[mid] ?? 0) < from) lo = mid + 1
    else hi = mid
  }
  const at = sorted[lo]
  return at !== undefined && at <= to ? at : undefined
}

/** The last time in `sorted` within [from, to], or undefined. */
const lastIn = (sorted: ReadonlyArray<number>, from: number, to: number): number | undefined => {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if ((sorted[mid] ?? 0) <= to) lo = mid + 1
    else hi = mid
  }
  const at = sorted[lo - 1]
  return at !== undefined && at >= from ? at : undefined
}

export interface SegmentStats {
  readonly name: string
  readonly p50Ms: number
  readonly p99Ms: number
  /** Over the slow requests: how much longer than its median this hop took, on average. */
  readonly slowExcessMs: number
  /** Slow requests in which this hop grew the most (over its median). */
  readonly grewMost: number
}

export interface TailAnalysis {
  readonly requests: number
  /** Requests whose every point was found (at concurrency 1, all of them). */
  readonly matched: number
  readonly slowMs: number
  readonly slow: number
  readonly ttftP50Ms: number
  readonly ttftP99Ms: number
  readonly segments: ReadonlyArray<SegmentStats>
  /** Per process: its GCs per second and mean pause, and the share of all and of slow requests a GC of its overlapped. */
  readonly gc: ReadonlyArray<{ readonly process: string; readonly perSecond: number; readonly meanMs: number; readonly allShare: number; readonly slowShare: number }>
  /** Slow requests that no GC of any process overlapped. */
  readonly slowWithoutGcShare: number
}

const overlaps = (gc: ReadonlyArray<readonly [number, number]>, from: number, to: number) => gc.some(([at, ms]) => at < to && at + ms > from)

export const analyseTail = (
  requests: ReadonlyArray<TimedRequest>,
  controller: ReadonlyArray<HopTrace>,
  workers: ReadonlyArray<HopTrace>,
  gcs: GcByProcess,
  slowMs: number
): TailAnalysis => {
  const received = times(controller, "request")
  const dispatched = times(controller, "dispatch")
  const responded = times(controller, "respond")
  const controllerIn = times(controller, "busIn")
  const workerIn = times(workers, "busIn")
  const workerTokens = times(workers, "tokens")
  const rows: Array<{ readonly request: TimedRequest; readonly segments: ReadonlyArray<number> }> = []
  for (const r of requests) {
    const end = r.startedAt + r.ttftMs
    const request = firstIn(received, r.startedAt, end)
    const dispatch = request === undefined ? undefined : firstIn(dispatched, request, end)
    const atWorker = dispatch === undefined ? undefined : firstIn(workerIn, dispatch, end)
    const tokens = atWorker === undefined ? undefined : firstIn(workerTokens, atWorker, end)
    const respond = tokens === undefined ? undefined : firstIn(responded, tokens, end)
    const back = tokens === undefined || respond === undefined ? undefined : lastIn(controllerIn, tokens, respond)
    const points = [r.startedAt, request, dispatch, atWorker, tokens, back, respond, end]
    if (points.some((p) => p === undefined)) continue
    const at = points as ReadonlyArray<number>
    rows.push({ request: r, segments: at.slice(1).map((p, i) => p - (at[i] ?? p)) })
  }
  const sortedOf = (i: number) => rows.map((row) => row.segments[i] ?? 0).sort((a, b) => a - b)
  const medians = SEGMENTS.map((_, i) => percentile(sortedOf(i), 50))
  const slow = rows.filter((row) => row.request.ttftMs > slowMs)
  const grewMost = SEGMENTS.map(() => 0)
  for (const row of slow) {
    let most = 0
    row.segments.forEach((ms, i) => {
      if (ms - (medians[i] ?? 0) > (row.segments[most] ?? 0) - (medians[most] ?? 0)) most = i
    })
    grewMost[most] = (grewMost[most] ?? 0) + 1
  }
  const ttfts = requests.map((r) => r.ttftMs).sort((a, b) => a - b)
  // Folded, not spread: a long run has more requests than a call takes arguments.
  const first = requests.reduce((min, r) => Math.min(min, r.startedAt), Number.POSITIVE_INFINITY)
  const last = requests.reduce((max, r) => Math.max(max, r.startedAt + r.ttftMs), Number.NEGATIVE_INFINITY)
  const span = requests.length === 0 ? 0 : (last - first) / 1000
  const overlapped = (set: ReadonlyArray<{ readonly request: TimedRequest }>, gc: ReadonlyArray<readonly [number, number]>) =>
    set.length === 0 ? Number.NaN : set.filter((row) => overlaps(gc, row.request.startedAt, row.request.startedAt + row.request.ttftMs)).length / set.length
  return {
    requests: requests.length,
    matched: rows.length,
    slowMs,
    slow: slow.length,
    ttftP50Ms: percentile(ttfts, 50),
    ttftP99Ms: percentile(ttfts, 99),
    segments: SEGMENTS.map((name, i) => ({
      name,
      p50Ms: medians[i] ?? Number.NaN,
      p99Ms: percentile(sortedOf(i), 99),
      slowExcessMs: slow.length === 0 ? Number.NaN : slow.reduce((n, row) => n + Math.max(0, (row.segments[i] ?? 0) - (medians[i] ?? 0)), 0) / slow.length,
      grewMost: grewMost[i] ?? 0
    })),
    gc: gcs.map(({ process, gc }) => {
      const inRun = gc.filter(([at]) => at >= first && at <= first + span * 1000)
      return {
        process,
        perSecond: span === 0 ? Number.NaN : inRun.length / span,
        meanMs: inRun.length === 0 ? 0 : inRun.reduce((n, [, ms]) => n + ms, 0) / inRun.length,
        allShare: overlapped(rows, gc),
        slowShare: overlapped(slow, gc)
      }
    }),
    slowWithoutGcShare:
      slow.length === 0 ? Number.NaN : slow.filter((row) => !gcs.some(({ gc }) => overlaps(gc, row.request.startedAt, row.request.startedAt + row.request.ttftMs))).length / slow.length
  }
}

const f = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")
const pct = (share: number) => (Number.isFinite(share) ? `${(100 * share).toFixed(0)} %` : "n/a")

export const formatTail = (a: TailAnalysis): string =>
  [
    `${a.requests} requests at concurrency 1 (${a.matched} traced through every hop): TTFT p50 ${f(a.ttftP50Ms, 2)} ms, p99 ${f(a.ttftP99Ms, 2)} ms; ` +
      `${a.slow} slow (TTFT over ${a.slowMs} ms).`,
    "",
    "| hop | p50 (ms) | p99 (ms) | slow requests: mean time over its p50 (ms) | slow requests in which it grew most |",
    "|---|---:|---:|---:|---:|",
    ...a.segments.map((s) => `| ${s.name} | ${f(s.p50Ms, 3)} | ${f(s.p99Ms, 2)} | ${f(s.slowExcessMs, 2)} | ${s.grewMost} |`),
    "",
    "| process | GCs/s | mean GC pause (ms) | requests a GC of it overlapped | slow requests a GC of it overlapped |",
    "|---|---:|---:|---:|---:|",
    ...a.gc.map((g) => `| ${g.process} | ${f(g.perSecond, 1)} | ${f(g.meanMs, 2)} | ${pct(g.allShare)} | ${pct(g.slowShare)} |`),
    "",
    `Slow requests that no GC overlapped: ${pct(a.slowWithoutGcShare)}. A hop that crosses processes (client → controller, bus → worker, ` +
      "bus → controller, controller → client) is mostly waiting for the next process to be woken and get a core; the others are one " +
      "process's own work."
  ].join("\n")

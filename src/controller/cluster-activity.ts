import { Clock, Effect } from "effect"
import type { DashboardFailure, DashboardSeries } from "../domain/dashboard.js"
import type { RequestSummary } from "./request-journal.js"

/**
 * What the dashboard shows of recent traffic, fed once per finished request by `RequestJournal`:
 * per-second requests, tokens and failures over the last five minutes, time to first token over
 * the last minute, the last failures, per-model rates, retries and cancels.
 *
 * Recording runs on every request, so it only writes into preallocated rings (no sorting, no
 * growing arrays); the snapshot, taken about once a second per dashboard, does the rest. The
 * state is plain mutable memory rather than a `Ref`: it is touched only synchronously, from one
 * JavaScript thread, and a `Ref` would allocate a new state per request.
 */

export const SERIES_SECONDS = 300
export const RATE_WINDOW_SECONDS = 10
export const TTFT_WINDOW_MS = 60_000
/** Samples kept for the TTFT percentiles; above this many per minute the latest ones count. */
export const TTFT_CAPACITY = 4_096
export const FAILURES_KEPT = 20
/** A model without a request for this long leaves the per-model rates. */
const MODEL_IDLE_MS = 5 * 60_000
/** Longest model name kept for the failures list (it may be any text a client sent). */
const MODEL_CHARS = 128

/** Counts per second on `channels` channels over the last `size` seconds. */
export class SecondRing {
  private readonly data: Float64Array
  /** The latest second written (epoch seconds); undefined before the first. */
  private head: number | undefined

  constructor(
    readonly size: number,
    readonly channels: number
  ) {
    this.data = new Float64Array(size * channels)
  }

  /** Moves the head to `second`, clearing the seconds skipped. */
  private advance(second: number) {
    if (this.head === undefined) {
      this.head = second
      return
    }
    const steps = Math.min(second - this.head, this.size)
    for (let i = 1; i <= steps; i++) {
      const slot = ((this.head + i) % this.size) * this.channels
      this.data.fill(0, slot, slot + this.channels)
    }
    this.head = second
  }

  add(second: number, channel: number, amount: number) {
    if (this.head === undefined || second > this.head) this.advance(second)
    const head = this.head ?? second
    if (second <= head - this.size) return // older than the window: a clock step back
    const index = (second % this.size) * this.channels + channel
    this.data[index] = (this.data[index] ?? 0) + amount
  }

  get(second: number, channel: number): number {
    if (this.head === undefined || second > this.head || second <= this.head - this.size) return 0
    return this.data[(second % this.size) * this.channels + channel] ?? 0
  }

  /** Sum of `channel` over the seconds `from..to` (inclusive). */
  sum(from: number, to: number, channel: number): number {
    let total = 0
    for (let s = from; s <= to; s++) total += this.get(s, channel)
    return total
  }

  latest(): number | undefined {
    return this.head
  }
}

const REQUESTS = 0
const TOKENS = 1
const FAILURES = 2

export interface ModelRates {
  readonly requestsPerSecond: number
  readonly tokensPerSecond: number
}

export interface ActivitySnapshot {
  readonly requestsPerSecond: number
  readonly tokensPerSecond: number
  readonly ttftP50Ms: number | null
  readonly ttftP95Ms: number | null
  readonly ttftSamples: number
  readonly retries: number
  readonly cancels: number
  readonly series: DashboardSeries
  /** Newest first. */
  readonly failures: ReadonlyArray<DashboardFailure>
  /** By model name; only models some worker registered. */
  readonly models: ReadonlyMap<string, ModelRates>
}

/** The part of a request summary the activity reads. */
export type ActivityInput = Pick<
  RequestSummary,
  "requestId" | "route" | "model" | "modelKnown" | "workerId" | "outcome" | "status" | "errorCode" | "tokens" | "ttftMs" | "retries"
>

/** Nearest-rank percentile of sorted values. */
export const percentile = (sorted: ArrayLike<number>, p: number): number | null => {
  if (sorted.length === 0) return null
  const rank = Math.max(1, Math.ceil(p * sorted.length))
  return sorted[rank - 1] ?? null
}

const round = (n: number, digits = 2) => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** The recent activity of one controller; `now` is epoch ms, passed in so tests choose it. */
export class ActivityWindow {
  // One more second than shown: the current (incomplete) second is written but not plotted.
  private readonly ring = new SecondRing(SERIES_SECONDS + 1, 3)
  private readonly ttftAt = new Float64Array(TTFT_CAPACITY)
  private readonly ttftMs = new Float64Array(TTFT_CAPACITY)
  private ttftNext = 0
  private ttftCount = 0
  private readonly failures: Array<DashboardFailure | undefined> = new Array<DashboardFailure | undefined>(FAILURES_KEPT)
  private failuresNext = 0
  private readonly models = new Map<string, { readonly ring: SecondRing; lastAt: number }>()
  private retries = 0
  private cancels = 0

  record(s: ActivityInput, now: number): void {
    const second = Math.floor(now / 1000)
    this.ring.add(second, REQUESTS, 1)
    if (s.tokens > 0) this.ring.add(second, TOKENS, s.tokens)
    this.retries += s.retries
    if (s.outcome === "cancelled") this.cancels++
    if (s.ttftMs !== undefined) {
      this.ttftAt[this.ttftNext] = now
      this.ttftMs[this.ttftNext] = s.ttftMs
      this.ttftNext = (this.ttftNext + 1) % TTFT_CAPACITY
      if (this.ttftCount < TTFT_CAPACITY) this.ttftCount++
    }
    if (s.outcome === "failed") {
      this.ring.add(second, FAILURES, 1)
      this.failures[this.failuresNext] = {
        at: now,
        requestId: s.requestId,
        route: s.route.slice(0, MODEL_CHARS),
        model: s.model.slice(0, MODEL_CHARS),
        code: s.errorCode ?? "unknown",
        status: s.status,
        ...(s.workerId === undefined ? {} : { workerId: s.workerId })
      }
      this.failuresNext = (this.failuresNext + 1) % FAILURES_KEPT
    }
    if (s.modelKnown && s.model !== "") {
      let model = this.models.get(s.model)
      if (model === undefined) {
        model = { ring: new SecondRing(RATE_WINDOW_SECONDS + 1, 2), lastAt: now }
        this.models.set(s.model, model)
      }
      model.lastAt = now
      model.ring.add(second, REQUESTS, 1)
      if (s.tokens > 0) model.ring.add(second, TOKENS, s.tokens)
    }
  }

  snapshot(now: number): ActivitySnapshot {
    const second = Math.floor(now / 1000)
    // Rates include the current second: a request shows at once, at the cost of reading a little low.
    const rateFrom = second - RATE_WINDOW_SECONDS + 1
    const rate = (ring: SecondRing, channel: number) => round(ring.sum(rateFrom, second, channel) / RATE_WINDOW_SECONDS)

    const requests = new Array<number>(SERIES_SECONDS)
    const tokens = new Array<number>(SERIES_SECONDS)
    const failed = new Array<number>(SERIES_SECONDS)
    for (let i = 0; i < SERIES_SECONDS; i++) {
      const s = second - SERIES_SECONDS + i
      requests[i] = this.ring.get(s, REQUESTS)
      tokens[i] = this.ring.get(s, TOKENS)
      failed[i] = this.ring.get(s, FAILURES)
    }

    const recent: Array<number> = []
    for (let i = 0; i < this.ttftCount; i++) {
      const at = this.ttftAt[i] ?? 0
      if (at > now - TTFT_WINDOW_MS && at <= now) recent.push(this.ttftMs[i] ?? 0)
    }
    recent.sort((a, b) => a - b)
    const p50 = percentile(recent, 0.5)
    const p95 = percentile(recent, 0.95)

    const failures: Array<DashboardFailure> = []
    for (let i = 1; i <= FAILURES_KEPT; i++) {
      const entry = this.failures[(this.failuresNext - i + FAILURES_KEPT) % FAILURES_KEPT]
      if (entry !== undefined) failures.push(entry)
    }

    const models = new Map<string, ModelRates>()
    for (const [name, model] of this.models) {
      if (now - model.lastAt > MODEL_IDLE_MS) {
        this.models.delete(name)
        continue
      }
      models.set(name, { requestsPerSecond: rate(model.ring, REQUESTS), tokensPerSecond: rate(model.ring, TOKENS) })
    }

    return {
      requestsPerSecond: rate(this.ring, REQUESTS),
      tokensPerSecond: rate(this.ring, TOKENS),
      ttftP50Ms: p50 === null ? null : round(p50, 1),
      ttftP95Ms: p95 === null ? null : round(p95, 1),
      ttftSamples: recent.length,
      retries: this.retries,
      cancels: this.cancels,
      series: { endAt: second * 1000, stepMs: 1000, requests, tokens, failures: failed },
      failures,
      models
    }
  }
}

/** The controller's `ActivityWindow`, on `Clock` time. */
export class ClusterActivity extends Effect.Service<ClusterActivity>()("controller/ClusterActivity", {
  sync: () => {
    const window = new ActivityWindow()
    return {
      /** Records at `now` (epoch ms), synchronously: `RequestJournal` reads the clock once per request for it. */
      unsafeRecord: (s: ActivityInput, now: number): void => window.record(s, now),
      snapshot: Effect.map(Clock.currentTimeMillis, (now) => window.snapshot(now))
    } as const
  }
}) {}

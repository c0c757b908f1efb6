import { Effect, FiberSet, Metric } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { WorkerProbeConfig } from "../config/schema.js"
import { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import type { WorkerInfo } from "../domain/worker.js"
import { WorkerProbe, WorkerProbeReply } from "../domain/worker-probe.js"
import { type ProbeResult, probeLiveness } from "../nats/liveness-probe.js"
import { NatsTransport } from "../nats/nats-transport.js"
import * as Metrics from "./metrics.js"
import { Registry } from "./registry.js"

/**
 * Lost and hung workers, found in about a second (issue 13). The heartbeat's offline timeout (15 s)
 * is far too slow for a client watching a stream stall, and a worker's NATS connection closing or its
 * event loop stopping says nothing until then. So while a worker has a stream that is silent for
 * longer than that stream's own rhythm explains, the controller asks the worker directly —
 * `worker.{id}.probe`, answered from the worker's NATS callback whatever its engine is doing:
 *
 * - no responders: the worker is gone (its connection closed: killed, crashed) → offline, reason
 *   `no responders`;
 * - `max_misses` probes in a row without an answer within `timeout_ms`: it is hung (stopped, its
 *   event loop wedged) → offline, reason `unresponsive`;
 * - an answer: it lives; its slow streams are slow, not lost (they keep their own deadlines).
 *
 * Offline, the Router's registry listener tells each of the worker's streams at once (`Relay.lost`)
 * and they move to another worker (`migration.ts`) or end. One probe per worker at a time, never one
 * per stream; nothing at all while streams flow. The decisions are the pure functions below (tested
 * with explicit times); the service only keeps the state per worker and runs them on a scheduled
 * fiber of the Effect clock.
 */

export type ProbeSettings = WorkerProbeConfig

/** One stream as the probes see it (`Relay` implements it). */
export interface ProbedStream {
  /** When its worker last showed life on it: the ack, then each message; undefined before the ack and once it ended. */
  readonly lastHeardAt: number | undefined
  /** Its mean gap between messages so far; undefined before its second message. */
  readonly messageGapMs: number | undefined
}

/** What the probes know of one worker. */
export interface ProbeState {
  /** A probe is on its way (never a second one at the same time). */
  readonly inFlight: boolean
  /** When the worker last answered a probe: news from each of its streams. */
  readonly answeredAt: number | undefined
  /** Probes in a row that got no answer in time. */
  readonly misses: number
}

export const initialProbeState: ProbeState = { inFlight: false, answeredAt: undefined, misses: 0 }

/**
 * How long a stream may be silent before its worker is probed: `min_silence_ms`, or `gap_factor`
 * times its own mean gap when that is longer (a slow model's stream is not suspicious at 500 ms).
 * Before its first token (no gap yet) it is `min_silence_ms`: a long first token is probed for
 * every `min_silence_ms` until it comes.
 */
export const allowedSilenceMs = (messageGapMs: number | undefined, s: ProbeSettings): number =>
  messageGapMs === undefined ? s.minSilenceMs : Math.max(s.minSilenceMs, s.gapFactor * messageGapMs)

/**
 * When the worker is due a probe: the earliest moment one of its acked streams has been silent for
 * its allowance, counting from the later of its last message and the worker's last answer to a
 * probe. After an unanswered probe nothing new was heard, so it is due again at once. Undefined:
 * no acked stream, nothing to watch.
 */
export const probeDueAt = (streams: Iterable<ProbedStream>, state: ProbeState, s: ProbeSettings): number | undefined => {
  let due: number | undefined
  for (const stream of streams) {
    const heard = stream.lastHeardAt
    if (heard === undefined) continue
    const since = state.answeredAt === undefined ? heard : Math.max(heard, state.answeredAt)
    const at = since + allowedSilenceMs(stream.messageGapMs, s)
    if (due === undefined || at < due) due = at
  }
  return due
}

/** Whether to send a probe at `now`: it is due and none is on its way. */
export const shouldProbe = (state: ProbeState, dueAt: number | undefined, now: number): boolean =>
  !state.inFlight && dueAt !== undefined && now >= dueAt

export type { ProbeResult } from "../nats/liveness-probe.js"

/** What a probe's result means for its worker. */
export type ProbeVerdict = "alive" | "gone" | "missed" | "hung"

/**
 * The rule for a probe's result. An answer: alive, misses forgotten. No responders: gone. A
 * timeout: a miss, unless one of the worker's streams brought a message after the probe was sent
 * (then it lives, only its answer was slow); the `max_misses`-th miss in a row: hung.
 */
export const afterProbe = (
  state: ProbeState,
  result: ProbeResult,
  at: { readonly now: number; readonly heardSinceSent: boolean },
  s: ProbeSettings
): { readonly state: ProbeState; readonly verdict: ProbeVerdict } => {
  switch (result) {
    case "answered":
      return { state: { inFlight: false, answeredAt: at.now, misses: 0 }, verdict: "alive" }
    case "no_responders":
      return { state: { ...state, inFlight: false }, verdict: "gone" }
    case "timeout": {
      if (at.heardSinceSent) return { state: { ...state, inFlight: false, misses: 0 }, verdict: "alive" }
      const misses = state.misses + 1
      return { state: { ...state, inFlight: false, misses }, verdict: misses >= s.maxMisses ? "hung" : "missed" }
    }
  }
}

/** The tick of the probe fiber: a fifth of `min_silence_ms`, between 10 and 100 ms. */
export const probeTickMs = (s: ProbeSettings): number => Math.min(100, Math.max(10, Math.floor(s.minSilenceMs / 5)))

/** The registry's reasons for the two verdicts that take a worker offline. */
export const GONE_REASON = "no responders"
export const HUNG_REASON = "unresponsive"

interface Entry {
  readonly streams: Set<ProbedStream>
  state: ProbeState
}

const noop = () => {}

export class WorkerProbes extends Effect.Service<WorkerProbes>()("controller/WorkerProbes", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const nats = yield* NatsTransport
    const registry = yield* Registry
    const clock = yield* Effect.clock
    const run = yield* FiberSet.makeRuntime<never>()
    const settings = config.controller.workerProbe
    const tickMs = probeTickMs(settings)
    const now = () => clock.unsafeCurrentTimeMillis()
    const entries = new Map<string, Entry>()

    const counted = (result: ProbeResult) => Metric.increment(Metric.tagged(Metrics.workerProbesTotal, "result", result))

    const settle = (workerId: string, entry: Entry, result: ProbeResult, sentAt: number) =>
      Effect.suspend(() => {
        let heardSinceSent = false
        for (const stream of entry.streams) if ((stream.lastHeardAt ?? sentAt) > sentAt) heardSinceSent = true
        const next = afterProbe(entry.state, result, { now: now(), heardSinceSent }, settings)
        entry.state = next.state
        if (entry.streams.size === 0 && entries.get(workerId) === entry) entries.delete(workerId)
        switch (next.verdict) {
          case "alive":
            return Effect.void
          case "missed":
            return Effect.logInfo(`worker ${workerId}: probe ${next.state.misses} in a row unanswered within ${settings.timeoutMs} ms`)
          case "gone":
            return registry.markOffline(workerId, GONE_REASON)
          case "hung":
            return Effect.logWarning(
              `worker ${workerId}: ${next.state.misses} probes in a row unanswered within ${settings.timeoutMs} ms each, while a stream was silent`
            ).pipe(Effect.zipRight(registry.markOffline(workerId, HUNG_REASON)))
        }
      }).pipe(Effect.zipRight(counted(result)), Effect.annotateLogs({ workerId }))

    const probe = (workerId: string, entry: Entry, sentAt: number) => {
      entry.state = { ...entry.state, inFlight: true }
      run(
        probeLiveness(nats, Subjects.probe(workerId), WorkerProbe, { workerId: WorkerId.make(workerId) }, WorkerProbeReply, settings.timeoutMs).pipe(
          Effect.flatMap((result) => settle(workerId, entry, result, sentAt))
        )
      )
    }

    const tick = Effect.sync(() => {
      if (entries.size === 0) return
      const at = now()
      for (const [workerId, entry] of entries) {
        if (shouldProbe(entry.state, probeDueAt(entry.streams, entry.state, settings), at)) probe(workerId, entry, at)
      }
    })

    // A worker that changed status starts over: gone, its streams end; back, it earned a clean slate.
    yield* registry.listen((change) => {
      for (const t of change.transitions) {
        const entry = entries.get(t.workerId)
        if (entry !== undefined && !entry.state.inFlight) entry.state = initialProbeState
      }
    })
    if (settings.enabled) yield* Effect.sleep(tickMs).pipe(Effect.zipRight(tick), Effect.forever, Effect.forkScoped)

    return {
      tickMs,
      /**
       * Watches `stream` of `worker` until the returned function is called. Workers that do not
       * answer probes (older versions: no `capabilities.probes`) are never probed.
       */
      watch: (worker: WorkerInfo, stream: ProbedStream): (() => void) => {
        if (!settings.enabled || worker.capabilities.probes !== true) return noop
        const workerId = worker.workerId
        let entry = entries.get(workerId)
        if (entry === undefined) {
          entry = { streams: new Set(), state: initialProbeState }
          entries.set(workerId, entry)
        }
        const watched = entry
        watched.streams.add(stream)
        return () => {
          watched.streams.delete(stream)
          // An entry with a probe on its way is removed when the probe settles.
          if (watched.streams.size === 0 && !watched.state.inFlight && entries.get(workerId) === watched) entries.delete(workerId)
        }
      },
      /** Workers watched now. */
      size: (): number => entries.size
    } as const
  }),
  dependencies: [Registry.Default]
}) {}

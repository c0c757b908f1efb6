import { Effect, type Scope } from "effect"
import type { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import { ControllerProbe, ControllerProbeReply } from "../domain/worker.js"
import { type ProbeResult, probeLiveness } from "../nats/liveness-probe.js"
import { NatsTransport } from "../nats/nats-transport.js"
import type { RequestOwners } from "./request-owners.js"

/**
 * No work outlives its controller (issue 14). A controller killed mid-stream used to leave its
 * workers generating for nobody (254 tokens, and with `max_concurrent: 1` the restarted controller's
 * next request waited 16.6 s for the orphan). Now a worker that runs requests owned by controller C
 * (the requests' `controllerId`) asks `controller.C.probe` about once per `intervalMs` — one probe
 * per controller at a time, never one per request — and when C is gone stops all of C's requests at
 * once, as a cancel would (they end with an `error` `controller_gone`, in case C is alive after all
 * and reads it).
 *
 * C is gone when a probe finds no responders (NATS knows nobody subscribes: the controller's
 * connection is closed, which the server notices at once when the process dies), or when
 * `maxMisses` probes in a row go unanswered (a controller whose host vanished without closing its
 * connection). The controller answers from its NATS callback, so a busy controller still answers.
 * With the default 1 s interval a killed controller's work stops within about a second, a silent
 * one's within about two.
 *
 * A probe says nothing while this worker's own connection is down (NATS restarting, this worker's
 * node of a NATS cluster gone): no probes then, a probe that ends then is no verdict, and after the
 * reconnect one interval passes before the next probe, so that the controllers have resubscribed
 * too. A stream may survive a short outage (the worker's client buffers its tokens): it is not
 * stopped for it.
 */

export interface ProbePolicy {
  /** Between the starts of two probes of one controller. */
  readonly intervalMs: number
  /** A probe unanswered for this long is a miss (shorter than the interval: probes never overlap). */
  readonly timeoutMs: number
  /** Misses in a row after which the controller is gone. */
  readonly maxMisses: number
}

/** The policy for `worker.controller_probe_interval_ms`: a probe times out at 80 % of the interval; two misses. */
export const probePolicy = (intervalMs: number): ProbePolicy => ({
  intervalMs,
  timeoutMs: Math.max(1, Math.floor(intervalMs * 0.8)),
  maxMisses: 2
})

export type { ProbeResult } from "../nats/liveness-probe.js"

export interface Verdict {
  /** Misses in a row after this probe. */
  readonly misses: number
  /** Why the controller is gone; undefined while it is not. */
  readonly gone: string | undefined
}

/** What one probe's result says about a controller that had missed `misses` probes in a row. Pure. */
export const judge = (misses: number, result: ProbeResult, maxMisses: number): Verdict => {
  switch (result) {
    case "answered":
      return { misses: 0, gone: undefined }
    case "no_responders":
      return { misses: misses + 1, gone: "no responders" }
    case "timeout": {
      const next = misses + 1
      return { misses: next, gone: next >= maxMisses ? `no answer to ${next} probes in a row` : undefined }
    }
  }
}

/** The worst case from a controller's death to its work being stopped, in ms (for docs and tests). */
export const worstCaseStopMs = (policy: ProbePolicy): number => policy.intervalMs * policy.maxMisses + policy.timeoutMs

interface Watched {
  misses: number
  probing: boolean
}

export interface OwnerWatchOptions {
  readonly workerId: WorkerId
  readonly owners: RequestOwners
  readonly policy: ProbePolicy
}

/**
 * Watches the owners of this worker's running requests until the scope closes: a fiber that wakes
 * every `intervalMs` and probes, in a fiber of its own, each controller that owns a running request
 * and is not being probed already. A controller found gone has its requests stopped at once.
 */
export const watchOwners = (options: OwnerWatchOptions): Effect.Effect<void, never, NatsTransport | Scope.Scope> =>
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const { owners, policy, workerId } = options
    const watched = new Map<string, Watched>()

    const probe = (controllerId: string, state: Watched) =>
      probeLiveness(nats, Subjects.controllerProbe(controllerId), ControllerProbe, { workerId }, ControllerProbeReply, policy.timeoutMs).pipe(
        Effect.flatMap((result) => {
          // Sent or answered while the bus was away: no verdict.
          if (!connected()) return Effect.void
          const verdict = judge(state.misses, result, policy.maxMisses)
          state.misses = verdict.misses
          if (verdict.gone === undefined) return Effect.void
          watched.delete(controllerId)
          const stopped = owners.stopAll(controllerId)
          if (stopped === 0) return Effect.void
          return Effect.logWarning(`controller ${controllerId} is gone (${verdict.gone}): stopping its ${stopped} request(s)`)
        }),
        Effect.ensuring(
          Effect.sync(() => {
            state.probing = false
          })
        )
      )

    const connected = () => nats.connected?.() ?? true
    /** The connection was down at a tick: the first tick after it is back only resumes. */
    let wasDown = false

    const tick = Effect.suspend(() => {
      if (!connected()) {
        wasDown = true
        return Effect.void
      }
      if (wasDown) {
        wasDown = false
        return Effect.void
      }
      const owning = owners.controllers()
      // Controllers that own nothing any more are forgotten, misses and all.
      for (const id of watched.keys()) if (!owning.includes(id)) watched.delete(id)
      const due: Array<Effect.Effect<void>> = []
      for (const id of owning) {
        let state = watched.get(id)
        if (state === undefined) {
          state = { misses: 0, probing: false }
          watched.set(id, state)
        }
        if (state.probing) continue
        state.probing = true
        due.push(probe(id, state))
      }
      return Effect.forEach(due, (p) => Effect.forkScoped(p), { discard: true })
    })

    yield* Effect.sleep(policy.intervalMs).pipe(Effect.zipRight(tick), Effect.forever, Effect.forkScoped)
  })

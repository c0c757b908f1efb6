import { Clock, Effect, Option, Ref } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { WorkerDeregistration, WorkerHeartbeat, WorkerRegistration } from "../domain/worker.js"
import {
  type Admission,
  admitDeregistration,
  admitHeartbeat,
  admitRegistration,
  emptyLimiter,
  policyFromConfig,
  warningDue
} from "./registration-policy.js"
import { Registry } from "./registry.js"

/** A refused or adjusted worker is warned about at most once per this many ms (per id and reason). */
export const GATE_WARNING_INTERVAL_MS = 60_000

/**
 * The registration policy (registration-policy.ts) between NATS and the Registry: each method
 * returns the message to apply, bounded, or `None` when the policy refuses it. Refusals and
 * adjustments are logged as warnings, at most once a minute per worker id and reason, so that a
 * flood of forged messages cannot flood the log.
 */
export interface RegistrationGate {
  readonly registration: (reg: WorkerRegistration) => Effect.Effect<Option.Option<WorkerRegistration>>
  readonly heartbeat: (hb: WorkerHeartbeat) => Effect.Effect<Option.Option<WorkerHeartbeat>>
  readonly deregistration: (msg: WorkerDeregistration) => Effect.Effect<Option.Option<WorkerDeregistration>>
}

export const makeRegistrationGate: Effect.Effect<RegistrationGate, never, ClusterConfigService | Registry> = Effect.gen(
  function* () {
    const policy = policyFromConfig(yield* ClusterConfigService)
    const registry = yield* Registry
    const limiter = yield* Ref.make(emptyLimiter)

    const warn = (key: string, workerId: string, line: string) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const due = yield* Ref.modify(limiter, (l) => warningDue(l, key, now, GATE_WARNING_INTERVAL_MS))
        if (due) yield* Effect.logWarning(line).pipe(Effect.annotateLogs({ workerId }))
      })

    const settle = <A>(subject: string, workerId: string, admission: Admission<A>): Effect.Effect<Option.Option<A>> => {
      if (admission._tag === "Refused") {
        return warn(`${admission.reason}:${workerId}`, workerId, `ignoring ${subject}: ${admission.message}`).pipe(
          Effect.as(Option.none())
        )
      }
      const log =
        admission.notes.length === 0
          ? Effect.void
          : warn(`adjusted:${workerId}`, workerId, `worker ${workerId} ${subject} adjusted: ${admission.notes.join("; ")}`)
      return log.pipe(Effect.as(Option.some(admission.value)))
    }

    return {
      registration: (reg) =>
        Effect.gen(function* () {
          const known = Option.isSome(yield* registry.get(reg.workerId))
          // The cap counts every id, in constant time: `counts` walks the registry, and a flood of
          // 10,000 new ids made that quadratic (22 s, long enough to lose the NATS connection).
          const size = known ? 0 : yield* registry.size
          return yield* settle("worker.register", reg.workerId, admitRegistration(policy, reg, { known, size }))
        }),
      heartbeat: (hb) => settle("worker.heartbeat", hb.workerId, admitHeartbeat(policy, hb)),
      deregistration: (msg) => settle("worker.deregister", msg.workerId, admitDeregistration(policy, msg))
    }
  }
)

import { Clock, Effect, HashMap, Option, Stream, SubscriptionRef } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { WorkerDeregistration, WorkerHeartbeat, WorkerInfo, WorkerRegistration } from "../domain/worker.js"
import * as State from "./registry-state.js"

/** What the registry holds at one moment; `version` grows by one with every change. */
export interface RegistrySnapshot {
  readonly version: number
  readonly workers: ReadonlyArray<WorkerInfo>
}

export interface RegistryCounts {
  readonly total: number
  readonly online: number
  readonly offline: number
}

interface Versioned {
  readonly version: number
  readonly state: State.RegistryState
}

const toSnapshot = (v: Versioned): RegistrySnapshot => ({ version: v.version, workers: State.toArray(v.state) })

const logTransition = (t: State.StatusTransition): Effect.Effect<void> => {
  const line =
    t.to === "absent" ? `worker ${t.workerId} removed: ${t.reason}` : `worker ${t.workerId} ${t.to}: ${t.reason}`
  const log = t.to === "offline" ? Effect.logWarning(line) : Effect.logInfo(line)
  return log.pipe(Effect.annotateLogs({ workerId: t.workerId }))
}

/**
 * The controller's list of workers (PRD §1). The state is a `SubscriptionRef` over the pure
 * transitions of `registry-state.ts`; every status change is logged as one line annotated with its
 * `workerId`. Time comes from `Clock`, so tests drive it with `TestClock`.
 */
export class Registry extends Effect.Service<Registry>()("controller/Registry", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const { offlineTimeoutMs, pruneAfterMs } = config.discovery
    const ref = yield* SubscriptionRef.make<Versioned>({ version: 0, state: State.empty })

    /** Applies one pure transition atomically, logs its status changes, bumps the version if anything changed. */
    const apply = <A>(step: (state: State.RegistryState, now: number) => State.Transition<A>): Effect.Effect<A> =>
      SubscriptionRef.modifyEffect(ref, (current) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const next = step(current.state, now)
          yield* Effect.forEach(next.transitions, logTransition, { discard: true })
          const changed = next.state !== current.state
          return [next.result, changed ? { version: current.version + 1, state: next.state } : current] as const
        })
      )

    const workers = Effect.map(SubscriptionRef.get(ref), (v) => State.toArray(v.state))
    const withStatus = (status: WorkerInfo["status"]) =>
      Effect.map(workers, (all) => all.filter((w) => w.status === status))

    const register = (reg: WorkerRegistration): Effect.Effect<void> =>
      apply((s, now) => State.applyRegistration(s, reg, now)).pipe(
        Effect.withSpan("Registry.register", { attributes: { workerId: reg.workerId } })
      )

    const heartbeat = (hb: WorkerHeartbeat): Effect.Effect<State.HeartbeatResult> =>
      apply((s, now) => State.applyHeartbeat(s, hb, now))

    const deregister = (msg: WorkerDeregistration): Effect.Effect<void> =>
      apply((s) => State.applyDeregistration(s, msg)).pipe(
        Effect.withSpan("Registry.deregister", { attributes: { workerId: msg.workerId } })
      )

    const markOffline = (workerId: string, reason: string): Effect.Effect<void> =>
      apply((s) => State.markOffline(s, workerId, reason))

    /** Marks silent workers offline, then prunes offline workers past `prune_after_ms`. */
    const sweep: Effect.Effect<void> = apply((s, now) => {
      const swept = State.sweep(s, now, offlineTimeoutMs)
      const pruned = State.prune(swept.state, now, pruneAfterMs)
      return { state: pruned.state, transitions: [...swept.transitions, ...pruned.transitions], result: undefined }
    }).pipe(Effect.withSpan("Registry.sweep"))

    const get = (workerId: string): Effect.Effect<Option.Option<WorkerInfo>> =>
      Effect.map(SubscriptionRef.get(ref), (v) => HashMap.get(v.state, workerId))

    const counts: Effect.Effect<RegistryCounts> = Effect.map(workers, (all) => ({
      total: all.length,
      online: all.filter((w) => w.status === "online").length,
      offline: all.filter((w) => w.status === "offline").length
    }))

    const snapshot: Effect.Effect<RegistrySnapshot> = Effect.map(SubscriptionRef.get(ref), toSnapshot)

    /**
     * The current snapshot at once, then one snapshot per change. Subscribing and reading the
     * current value happen atomically, so no change is missed between the two.
     */
    const changes: Stream.Stream<RegistrySnapshot> = ref.changes.pipe(
      Stream.changesWith((a, b) => a.version === b.version),
      Stream.map(toSnapshot)
    )

    /** Completes as soon as the version is greater than `sinceVersion` (at once if it already is). */
    const awaitChange = (sinceVersion: number): Effect.Effect<RegistrySnapshot> =>
      ref.changes.pipe(
        Stream.filter((v) => v.version > sinceVersion),
        Stream.runHead,
        Effect.map((head) => toSnapshot(Option.getOrThrow(head)))
      )

    return {
      register,
      heartbeat,
      deregister,
      markOffline,
      sweep,
      all: workers,
      online: withStatus("online"),
      offline: withStatus("offline"),
      get,
      counts,
      snapshot,
      changes,
      awaitChange
    } as const
  })
}) {}

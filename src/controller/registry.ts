import { Clock, Effect, HashMap, Option, Ref } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { WorkerDeregistration, WorkerHeartbeat, WorkerInfo, WorkerRegistration } from "../domain/worker.js"
import * as State from "./registry-state.js"

export type RegistryCounts = State.RegistryCounts

/** What one registry update changed: the status transitions and every worker whose entry changed. */
export interface RegistryChange {
  readonly transitions: ReadonlyArray<State.StatusTransition>
  readonly touched: ReadonlyArray<string>
  /** The registry after the change. */
  readonly state: State.RegistryState
}

/** Called synchronously after every update that changed something; must not throw or block. */
export type RegistryListener = (change: RegistryChange) => void

const logTransition = (t: State.StatusTransition): Effect.Effect<void> => {
  const line =
    t.to === "absent" ? `worker ${t.workerId} removed: ${t.reason}` : `worker ${t.workerId} ${t.to}: ${t.reason}`
  const log = t.to === "offline" ? Effect.logWarning(line) : Effect.logInfo(line)
  return log.pipe(Effect.annotateLogs({ workerId: t.workerId }))
}

/**
 * The controller's list of workers (docs/contract.md §5.1). The state is a `Ref` over the pure transitions of
 * `registry-state.ts`, whose indexes keep every update and every selection independent of the
 * number of workers (issue 9: 10,000 registrations must not be quadratic). Every status change is
 * logged as one line annotated with its `workerId`; listeners (the Router, the admission queue) hear
 * of each change synchronously, instead of a snapshot stream that would copy the registry per change.
 * Time comes from `Clock`, so tests drive it with `TestClock`.
 */
export class Registry extends Effect.Service<Registry>()("controller/Registry", {
  scoped: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const { offlineTimeoutMs, pruneAfterMs } = config.discovery
    const ref = yield* Ref.make<State.RegistryState>(State.empty)
    const listeners = new Set<RegistryListener>()

    /** Applies one pure transition atomically, logs its status changes and tells the listeners. */
    const apply = <A>(step: (state: State.RegistryState, now: number) => State.Transition<A>): Effect.Effect<A> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const next = yield* Ref.modify(ref, (current) => {
          const t = step(current, now)
          return [t, t.state] as const
        })
        if (next.transitions.length > 0) yield* Effect.forEach(next.transitions, logTransition, { discard: true })
        if (next.touched.length > 0 && listeners.size > 0) {
          const change: RegistryChange = { transitions: next.transitions, touched: next.touched, state: next.state }
          for (const listener of listeners) listener(change)
        }
        return next.result
      })

    const state = Ref.get(ref)
    const workers = Effect.map(state, State.toArray)

    /** Marks silent workers offline, then prunes offline workers past `prune_after_ms`. */
    const sweep = (lagAllowanceMs = 0): Effect.Effect<void> =>
      apply((s, now) => {
        const swept = State.sweep(s, now, offlineTimeoutMs + lagAllowanceMs)
        const pruned = State.prune(swept.state, now, pruneAfterMs)
        return {
          state: pruned.state,
          transitions: [...swept.transitions, ...pruned.transitions],
          touched: [...swept.touched, ...pruned.touched],
          result: undefined
        }
      }).pipe(Effect.withSpan("Registry.sweep"))

    return {
      register: (reg: WorkerRegistration): Effect.Effect<void> => apply((s, now) => State.applyRegistration(s, reg, now)),
      heartbeat: (hb: WorkerHeartbeat): Effect.Effect<State.HeartbeatResult> =>
        apply((s, now) => State.applyHeartbeat(s, hb, now)),
      deregister: (msg: WorkerDeregistration): Effect.Effect<void> => apply((s) => State.applyDeregistration(s, msg)),
      markOffline: (workerId: string, reason: string): Effect.Effect<void> => apply((s) => State.markOffline(s, workerId, reason)),
      sweep,
      /** Every worker, ordered by id. */
      all: workers,
      /** The online workers, ordered by id. */
      online: Effect.map(workers, (all) => all.filter((w) => w.status === "online")),
      get: (workerId: string): Effect.Effect<Option.Option<WorkerInfo>> =>
        Effect.map(state, (s) => Option.fromNullable(State.getWorker(s, workerId))),
      counts: Effect.map(state, State.counts),
      /** How many workers the registry holds: constant time, unlike `counts` (which walks them). */
      size: Effect.map(state, (s) => HashMap.size(s.workers)),
      /** The whole state, for the balancer and listings that read several views at once. */
      state,
      /** Hears every change from now until the scope closes. */
      listen: (listener: RegistryListener) =>
        Effect.acquireRelease(
          Effect.sync(() => listeners.add(listener)),
          () => Effect.sync(() => listeners.delete(listener))
        )
    } as const
  })
}) {}

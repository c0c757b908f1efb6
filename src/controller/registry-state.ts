import { HashMap, HashSet, Option } from "effect"
import type {
  WorkerDeregistration,
  WorkerHeartbeat,
  WorkerInfo,
  WorkerRegistration,
  WorkerStatus
} from "../domain/worker.js"

/**
 * The controller's worker registry as an immutable value, and the pure transitions over it.
 * Every function takes the wall-clock time it should use (`now`, epoch ms) instead of reading a
 * clock, and returns the new state plus the status changes it caused, so that the service can log
 * one line per change. A function that changes nothing returns the very same state object.
 *
 * Besides the workers, the state keeps two indexes up to date in every transition, so that the
 * balancer never scans or sorts the whole registry: the online workers of each model, and how many
 * registered workers (online or not) serve each model. A transition costs O(models of the worker ×
 * log n); nothing here is linear in the number of workers except `sweep`, `prune` and listings.
 */
export interface RegistryState {
  readonly workers: HashMap.HashMap<string, WorkerInfo>
  /** Model → ids of the online workers that serve it. */
  readonly onlineByModel: HashMap.HashMap<string, HashSet.HashSet<string>>
  /** Model → how many registered workers (any status) serve it: the models the cluster knows. */
  readonly knownModels: HashMap.HashMap<string, number>
}

export const empty: RegistryState = { workers: HashMap.empty(), onlineByModel: HashMap.empty(), knownModels: HashMap.empty() }

/** `absent`: not in the registry (before a first registration, after a prune). */
export type TransitionStatus = WorkerStatus | "absent"

/** One change of a worker's status, e.g. `{ w1, online → offline, "no heartbeat for 15.2 s" }`. */
export interface StatusTransition {
  readonly workerId: string
  readonly from: TransitionStatus
  readonly to: TransitionStatus
  readonly reason: string
}

export interface Transition<A = void> {
  readonly state: RegistryState
  readonly transitions: ReadonlyArray<StatusTransition>
  /** Ids of the workers whose entry changed (status, registration or metrics). */
  readonly touched: ReadonlyArray<string>
  readonly result: A
}

export type HeartbeatResult = "updated" | "unknown"

const unchanged = <A>(state: RegistryState, result: A): Transition<A> => ({ state, transitions: [], touched: [], result })

const withoutReason = (info: WorkerInfo): WorkerInfo => {
  const { statusReason: _dropped, ...rest } = info
  return rest
}

/** Status reason of a worker that was pruned or swept, e.g. `no heartbeat for 15.2 s`. */
export const silenceReason = (silentMs: number): string => `no heartbeat for ${(silentMs / 1000).toFixed(1)} s`

/** Only `online` workers are offered requests (nothing sets `degraded` yet; it would not be). */
const isServing = (info: WorkerInfo): boolean => info.status === "online"

/**
 * Replaces worker `workerId`'s entry `before` by `after` (`undefined`: absent) and keeps both
 * indexes in step. When neither the status nor the skills object changed (a heartbeat), the
 * indexes are untouched.
 */
const put = (state: RegistryState, workerId: string, before: WorkerInfo | undefined, after: WorkerInfo | undefined): RegistryState => {
  const workers = after === undefined ? HashMap.remove(state.workers, workerId) : HashMap.set(state.workers, workerId, after)
  const sameIndex =
    before !== undefined && after !== undefined && before.skills === after.skills && isServing(before) === isServing(after)
  if (sameIndex) return { ...state, workers }
  let onlineByModel = state.onlineByModel
  let knownModels = state.knownModels
  if (before !== undefined) {
    for (const model of before.skills.availableModels) {
      const count = Option.getOrElse(HashMap.get(knownModels, model), () => 0) - 1
      knownModels = count > 0 ? HashMap.set(knownModels, model, count) : HashMap.remove(knownModels, model)
      if (isServing(before)) {
        const ids = HashMap.get(onlineByModel, model)
        if (Option.isSome(ids)) {
          const rest = HashSet.remove(ids.value, workerId)
          onlineByModel = HashSet.size(rest) === 0 ? HashMap.remove(onlineByModel, model) : HashMap.set(onlineByModel, model, rest)
        }
      }
    }
  }
  if (after !== undefined) {
    for (const model of after.skills.availableModels) {
      knownModels = HashMap.set(knownModels, model, Option.getOrElse(HashMap.get(knownModels, model), () => 0) + 1)
      if (isServing(after)) {
        const ids = Option.getOrElse(HashMap.get(onlineByModel, model), () => HashSet.empty<string>())
        onlineByModel = HashMap.set(onlineByModel, model, HashSet.add(ids, workerId))
      }
    }
  }
  return { workers, onlineByModel, knownModels }
}

export const getWorker = (state: RegistryState, workerId: string): WorkerInfo | undefined =>
  Option.getOrUndefined(HashMap.get(state.workers, workerId))

/**
 * A worker registers. New: `online`, `registeredAt = lastHeartbeat = now`. Known: the registration
 * fields are replaced (skills may have changed), `registeredAt` and the last metrics are kept, and
 * the worker is `online` again (with a transition if it was not).
 */
export const applyRegistration = (state: RegistryState, reg: WorkerRegistration, now: number): Transition => {
  const old = getWorker(state, reg.workerId)
  if (old === undefined) {
    const info: WorkerInfo = { ...reg, status: "online", lastHeartbeat: now, registeredAt: now }
    return {
      state: put(state, reg.workerId, undefined, info),
      transitions: [{ workerId: reg.workerId, from: "absent", to: "online", reason: "registered" }],
      touched: [reg.workerId],
      result: undefined
    }
  }
  const info: WorkerInfo = {
    ...reg,
    status: old.status === "offline" ? "online" : old.status,
    lastHeartbeat: now,
    registeredAt: old.registeredAt,
    ...(old.metrics !== undefined ? { metrics: old.metrics } : {}),
    ...(old.status !== "offline" && old.statusReason !== undefined ? { statusReason: old.statusReason } : {})
  }
  const transitions: ReadonlyArray<StatusTransition> =
    old.status === "offline" ? [{ workerId: reg.workerId, from: "offline", to: "online", reason: "registered" }] : []
  return { state: put(state, reg.workerId, old, info), transitions, touched: [reg.workerId], result: undefined }
}

/**
 * A heartbeat. From an unknown worker: `unknown` and nothing changes (the caller asks workers to
 * register again). Otherwise the metrics and `lastHeartbeat = now` are recorded, and an offline
 * worker comes back online.
 */
export const applyHeartbeat = (state: RegistryState, hb: WorkerHeartbeat, now: number): Transition<HeartbeatResult> => {
  const old = getWorker(state, hb.workerId)
  if (old === undefined) return unchanged(state, "unknown")
  if (old.status === "offline") {
    const info: WorkerInfo = { ...withoutReason(old), status: "online", metrics: hb.metrics, lastHeartbeat: now }
    return {
      state: put(state, hb.workerId, old, info),
      transitions: [{ workerId: hb.workerId, from: "offline", to: "online", reason: "heartbeat received" }],
      touched: [hb.workerId],
      result: "updated"
    }
  }
  const info: WorkerInfo = { ...old, metrics: hb.metrics, lastHeartbeat: now }
  return { state: put(state, hb.workerId, old, info), transitions: [], touched: [hb.workerId], result: "updated" }
}

/** Marks a known, not yet offline worker offline with `reason`; anything else changes nothing. */
export const markOffline = (state: RegistryState, workerId: string, reason: string): Transition => {
  const old = getWorker(state, workerId)
  if (old === undefined || old.status === "offline") return unchanged(state, undefined)
  return {
    state: put(state, workerId, old, { ...old, status: "offline", statusReason: reason }),
    transitions: [{ workerId, from: old.status, to: "offline", reason }],
    touched: [workerId],
    result: undefined
  }
}

/**
 * A worker stops gracefully: it stays listed, offline with reason `deregistered`, until pruned.
 * `lastHeartbeat` is kept, so pruning counts from the worker's last sign of life.
 */
export const applyDeregistration = (state: RegistryState, msg: WorkerDeregistration): Transition =>
  markOffline(state, msg.workerId, "deregistered")

/** Combines the steps of one pass over several workers into one transition. */
const fold = (state: RegistryState, ids: ReadonlyArray<string>, step: (s: RegistryState, id: string) => Transition): Transition => {
  let next = state
  const transitions: Array<StatusTransition> = []
  const touched: Array<string> = []
  for (const id of ids) {
    const t = step(next, id)
    next = t.state
    transitions.push(...t.transitions)
    touched.push(...t.touched)
  }
  return { state: next, transitions, touched, result: undefined }
}

/** Every worker that is not offline and was silent for more than `offlineTimeoutMs` goes offline. */
export const sweep = (state: RegistryState, now: number, offlineTimeoutMs: number): Transition => {
  const silent: Array<string> = []
  for (const info of HashMap.values(state.workers)) {
    if (info.status !== "offline" && now - info.lastHeartbeat > offlineTimeoutMs) silent.push(info.workerId)
  }
  return fold(state, silent, (s, id) => markOffline(s, id, silenceReason(now - (getWorker(s, id)?.lastHeartbeat ?? now))))
}

/** Removes offline workers whose last heartbeat is more than `pruneAfterMs` old. */
export const prune = (state: RegistryState, now: number, pruneAfterMs: number): Transition => {
  const stale: Array<WorkerInfo> = []
  for (const info of HashMap.values(state.workers)) {
    if (info.status === "offline" && now - info.lastHeartbeat > pruneAfterMs) stale.push(info)
  }
  return fold(
    state,
    stale.map((w) => w.workerId),
    (s, id) => {
      const old = getWorker(s, id)
      if (old === undefined) return unchanged(s, undefined)
      return {
        state: put(s, id, old, undefined),
        transitions: [{ workerId: id, from: "offline", to: "absent", reason: `pruned, ${silenceReason(now - old.lastHeartbeat)}` }],
        touched: [id],
        result: undefined
      }
    }
  )
}

const byWorkerId = (a: WorkerInfo, b: WorkerInfo) => (a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0)

/** Every worker, ordered by id (a stable order for listings). */
export const toArray = (state: RegistryState): ReadonlyArray<WorkerInfo> => Array.from(HashMap.values(state.workers)).sort(byWorkerId)

/** The online workers that serve `model` (unordered). */
export const onlineServing = (state: RegistryState, model: string): ReadonlyArray<WorkerInfo> => {
  const ids = HashMap.get(state.onlineByModel, model)
  if (Option.isNone(ids)) return []
  const out: Array<WorkerInfo> = []
  for (const id of ids.value) {
    const info = getWorker(state, id)
    if (info !== undefined) out.push(info)
  }
  return out
}

/** Whether some registered worker, online or not, serves `model`. */
export const isKnownModel = (state: RegistryState, model: string): boolean => HashMap.has(state.knownModels, model)

/** The models some online worker serves, each with the earliest `registeredAt` among them, sorted by name. */
export const servedModels = (state: RegistryState): ReadonlyArray<{ readonly model: string; readonly since: number }> => {
  const out: Array<{ model: string; since: number }> = []
  for (const [model, ids] of state.onlineByModel) {
    let since = Number.POSITIVE_INFINITY
    for (const id of ids) since = Math.min(since, getWorker(state, id)?.registeredAt ?? since)
    out.push({ model, since })
  }
  return out.sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0))
}

export interface RegistryCounts {
  readonly total: number
  readonly online: number
  readonly offline: number
}

export const counts = (state: RegistryState): RegistryCounts => {
  let online = 0
  let offline = 0
  for (const w of HashMap.values(state.workers)) {
    if (w.status === "online") online++
    else if (w.status === "offline") offline++
  }
  return { total: HashMap.size(state.workers), online, offline }
}

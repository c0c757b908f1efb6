import { HashMap, Option } from "effect"
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
 */
export type RegistryState = HashMap.HashMap<string, WorkerInfo>

export const empty: RegistryState = HashMap.empty()

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
  readonly result: A
}

export type HeartbeatResult = "updated" | "unknown"

const unchanged = <A>(state: RegistryState, result: A): Transition<A> => ({ state, transitions: [], result })

const withoutReason = (info: WorkerInfo): WorkerInfo => {
  const { statusReason: _dropped, ...rest } = info
  return rest
}

/** Status reason of a worker that was pruned or swept, e.g. `no heartbeat for 15.2 s`. */
export const silenceReason = (silentMs: number): string => `no heartbeat for ${(silentMs / 1000).toFixed(1)} s`

/**
 * A worker registers. New: `online`, `registeredAt = lastHeartbeat = now`. Known: the registration
 * fields are replaced (skills may have changed), `registeredAt` and the last metrics are kept, and
 * the worker is `online` again (with a transition if it was not).
 */
export const applyRegistration = (state: RegistryState, reg: WorkerRegistration, now: number): Transition => {
  const previous = HashMap.get(state, reg.workerId)
  if (Option.isNone(previous)) {
    const info: WorkerInfo = { ...reg, status: "online", lastHeartbeat: now, registeredAt: now }
    return {
      state: HashMap.set(state, reg.workerId, info),
      transitions: [{ workerId: reg.workerId, from: "absent", to: "online", reason: "registered" }],
      result: undefined
    }
  }
  const old = previous.value
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
  return { state: HashMap.set(state, reg.workerId, info), transitions, result: undefined }
}

/**
 * A heartbeat. From an unknown worker: `unknown` and nothing changes (the caller asks workers to
 * register again). Otherwise the metrics and `lastHeartbeat = now` are recorded, and an offline
 * worker comes back online.
 */
export const applyHeartbeat = (
  state: RegistryState,
  hb: WorkerHeartbeat,
  now: number
): Transition<HeartbeatResult> => {
  const previous = HashMap.get(state, hb.workerId)
  if (Option.isNone(previous)) return unchanged(state, "unknown")
  const old = previous.value
  if (old.status === "offline") {
    const info: WorkerInfo = { ...withoutReason(old), status: "online", metrics: hb.metrics, lastHeartbeat: now }
    return {
      state: HashMap.set(state, hb.workerId, info),
      transitions: [{ workerId: hb.workerId, from: "offline", to: "online", reason: "heartbeat received" }],
      result: "updated"
    }
  }
  const info: WorkerInfo = { ...old, metrics: hb.metrics, lastHeartbeat: now }
  return { state: HashMap.set(state, hb.workerId, info), transitions: [], result: "updated" }
}

/** Marks a known, not yet offline worker offline with `reason`; anything else changes nothing. */
export const markOffline = (state: RegistryState, workerId: string, reason: string): Transition => {
  const previous = HashMap.get(state, workerId)
  if (Option.isNone(previous) || previous.value.status === "offline") return unchanged(state, undefined)
  const old = previous.value
  return {
    state: HashMap.set(state, workerId, { ...old, status: "offline", statusReason: reason }),
    transitions: [{ workerId, from: old.status, to: "offline", reason }],
    result: undefined
  }
}

/**
 * A worker stops gracefully: it stays listed, offline with reason `deregistered`, until pruned.
 * `lastHeartbeat` is kept, so pruning counts from the worker's last sign of life.
 */
export const applyDeregistration = (state: RegistryState, msg: WorkerDeregistration): Transition =>
  markOffline(state, msg.workerId, "deregistered")

/** Every worker that is not offline and was silent for more than `offlineTimeoutMs` goes offline. */
export const sweep = (state: RegistryState, now: number, offlineTimeoutMs: number): Transition => {
  let next = state
  const transitions: Array<StatusTransition> = []
  for (const info of HashMap.values(state)) {
    const silentMs = now - info.lastHeartbeat
    if (info.status !== "offline" && silentMs > offlineTimeoutMs) {
      const step = markOffline(next, info.workerId, silenceReason(silentMs))
      next = step.state
      transitions.push(...step.transitions)
    }
  }
  return { state: next, transitions, result: undefined }
}

/** Removes offline workers whose last heartbeat is more than `pruneAfterMs` old. */
export const prune = (state: RegistryState, now: number, pruneAfterMs: number): Transition => {
  let next = state
  const transitions: Array<StatusTransition> = []
  for (const info of HashMap.values(state)) {
    const silentMs = now - info.lastHeartbeat
    if (info.status === "offline" && silentMs > pruneAfterMs) {
      next = HashMap.remove(next, info.workerId)
      transitions.push({ workerId: info.workerId, from: "offline", to: "absent", reason: `pruned, ${silenceReason(silentMs)}` })
    }
  }
  return { state: next, transitions, result: undefined }
}

/** Every worker, ordered by id (a stable order for listings). */
export const toArray = (state: RegistryState): ReadonlyArray<WorkerInfo> =>
  Array.from(HashMap.values(state)).sort((a, b) => (a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0))

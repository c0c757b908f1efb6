import { Schema } from "effect"
import { ClusterMode, ControllerState } from "./cluster.js"
import { EpochMillis, NonNegativeInt, NonNegativeNumber } from "./ids.js"
import { HardwareProfile, RequestCounters, WorkerStatus } from "./worker.js"

/**
 * What `/dashboard` shows, one snapshot at a time: `GET /api/cluster/dashboard` answers one,
 * `GET /api/cluster/events` streams one per second as server-sent events (`data: <JSON>`).
 * Rates are per second over the last `rateWindowSeconds`; durations are milliseconds.
 */

export const DashboardWorker = Schema.Struct({
  workerId: Schema.String,
  hostname: Schema.String,
  status: WorkerStatus,
  /** Why it is offline or degraded ("no heartbeat for 1.6 s", "deregistered"). */
  statusReason: Schema.optional(Schema.String),
  ...HardwareProfile.pick("chip", "cpuCores", "gpuCores", "gpuMemoryGB", "totalMemoryGB").fields,
  engine: Schema.String,
  models: Schema.Array(Schema.String),
  tags: Schema.Array(Schema.String),
  /** Requests running on it, as it last reported; 0 once offline (never a dead worker's last load). */
  active: NonNegativeInt,
  maxConcurrent: NonNegativeInt,
  /** Tokens per second over its last heartbeat interval; 0 once offline. */
  tokensPerSecond: NonNegativeNumber,
  /** Requests it has finished since it started, as it last reported. */
  requestsServed: NonNegativeInt,
  /** Time since its last heartbeat, by the controller's clock. */
  lastHeartbeatAgeMs: NonNegativeNumber
})
export type DashboardWorker = typeof DashboardWorker.Type

export const DashboardModel = Schema.Struct({
  model: Schema.String,
  /** Online workers that serve it. */
  workers: Schema.Array(Schema.String),
  /** Offline workers that hold it. */
  offlineWorkers: Schema.Array(Schema.String),
  requestsPerSecond: NonNegativeNumber,
  tokensPerSecond: NonNegativeNumber
})
export type DashboardModel = typeof DashboardModel.Type

export const DashboardFailure = Schema.Struct({
  /** When it ended (epoch ms). */
  at: EpochMillis,
  requestId: Schema.String,
  route: Schema.String,
  /** The model asked for, as sent (cut to 128 characters). */
  model: Schema.String,
  code: Schema.String,
  status: NonNegativeInt,
  workerId: Schema.optional(Schema.String)
})
export type DashboardFailure = typeof DashboardFailure.Type

/** Per-second counts of the last five minutes, oldest first; the last entry is the last complete second. */
export const DashboardSeries = Schema.Struct({
  /** The end of the last second (epoch ms). */
  endAt: EpochMillis,
  stepMs: NonNegativeInt,
  requests: Schema.Array(NonNegativeNumber),
  tokens: Schema.Array(NonNegativeNumber),
  failures: Schema.Array(NonNegativeNumber)
})
export type DashboardSeries = typeof DashboardSeries.Type

/** Prefix affinity (cache-aware routing) since the controller started: how dispatches went for the workers' prompt caches. */
export const DashboardAffinity = Schema.Struct({
  /** `load_balancing.affinity.enabled` with strategy `smart`. */
  enabled: Schema.Boolean,
  /** Sent to the worker holding the longest prefix of the prompt. */
  hits: NonNegativeInt,
  /** Another worker held a longer prefix (load or the strategy won). */
  displaced: NonNegativeInt,
  /** No worker held a reusable prefix (a new conversation). */
  misses: NonNegativeInt,
  /** hits / (hits + displaced), 0..1: of the prompts some worker had cached, the share that went there; null before any. */
  hitRate: Schema.NullOr(NonNegativeNumber)
})
export type DashboardAffinity = typeof DashboardAffinity.Type

export const DashboardController = Schema.Struct({
  version: Schema.String,
  mode: ClusterMode,
  state: ControllerState,
  uptimeMs: NonNegativeNumber,
  requestsPerSecond: NonNegativeNumber,
  tokensPerSecond: NonNegativeNumber,
  /** Requests the controller is handling now (waiting in the queue included). */
  inFlight: NonNegativeInt,
  /** Requests waiting in the admission queue. */
  queued: NonNegativeInt,
  /** A worker's counters, plus the requests the client cancelled. */
  requests: Schema.Struct({ ...RequestCounters.fields, cancelled: NonNegativeInt }),
  /** succeeded / (succeeded + failed), 0..1; 1 before any finished. */
  successRate: NonNegativeNumber,
  /** Time to first token over the last minute; null without a sample. */
  ttftP50Ms: Schema.NullOr(NonNegativeNumber),
  ttftP95Ms: Schema.NullOr(NonNegativeNumber),
  ttftSamples: NonNegativeInt,
  /** Dispatches moved to another worker, and requests the client cancelled, since the controller started. */
  retries: NonNegativeInt,
  cancels: NonNegativeInt,
  affinity: DashboardAffinity,
  rateWindowSeconds: NonNegativeInt
})
export type DashboardController = typeof DashboardController.Type

export const DashboardSnapshot = Schema.Struct({
  at: EpochMillis,
  controller: DashboardController,
  workers: Schema.Array(DashboardWorker),
  models: Schema.Array(DashboardModel),
  series: DashboardSeries,
  /** The last 20 failed requests, newest first. */
  failures: Schema.Array(DashboardFailure)
}).annotations({ identifier: "DashboardSnapshot" })
export type DashboardSnapshot = typeof DashboardSnapshot.Type

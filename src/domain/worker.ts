import { Schema } from "effect"
import { ControllerId, EpochMillis, NonNegativeInt, NonNegativeNumber, WorkerId } from "./ids.js"

export const HardwareProfile = Schema.Struct({
  platform: Schema.String,
  arch: Schema.String,
  chip: Schema.optional(Schema.String),
  cpuCores: NonNegativeInt,
  gpuCores: Schema.optional(NonNegativeInt),
  /** Memory usable for model weights, in GB (the Metal working set on Apple Silicon). */
  gpuMemoryGB: NonNegativeNumber,
  totalMemoryGB: NonNegativeNumber
})
export type HardwareProfile = typeof HardwareProfile.Type

export const WorkerCapabilities = Schema.Struct({
  maxConcurrent: NonNegativeInt,
  supportsStreaming: Schema.Boolean,
  /** The engine's type string, e.g. `synthetic`. */
  engine: Schema.String,
  /**
   * extension (issue 13): the kinds of request (`chat`, `completions`) the engine can continue from
   * a `continuation`; absent: none. Only such workers are chosen to continue a stream.
   */
  continuation: Schema.optional(Schema.Array(Schema.String).pipe(Schema.maxItems(16))),
  /**
   * extension (issue 13): the worker answers liveness probes on `worker.{id}.probe`. Controllers
   * only probe workers that say so: an older worker would find no responders and be taken for gone.
   */
  probes: Schema.optional(Schema.Boolean),
  /**
   * extension (issue 12): what the engine honours for every model (src/domain/features.ts:
   * `tools`, `response_format`, `logprobs`, …). Absent (an older worker): plain generation only.
   * Strings, not a closed list, so that a newer worker's feature does not fail an older controller.
   */
  features: Schema.optional(Schema.Array(Schema.String)),
  /** extension (issue 12): per model, a list that replaces `features` for that model. */
  modelFeatures: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Array(Schema.String) }))
})
export type WorkerCapabilities = typeof WorkerCapabilities.Type

export const ModelSkills = Schema.Struct({
  availableModels: Schema.Array(Schema.String),
  /** Model name → absolute path on the worker. */
  modelPaths: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** Model name → bytes on disk. */
  modelSizes: Schema.Record({ key: Schema.String, value: NonNegativeNumber }),
  totalModelSize: NonNegativeNumber,
  lastScanned: EpochMillis
})
export type ModelSkills = typeof ModelSkills.Type

export const WorkerRegistration = Schema.Struct({
  workerId: WorkerId,
  hostname: Schema.String,
  ip: Schema.String,
  port: NonNegativeInt,
  hardware: HardwareProfile,
  capabilities: WorkerCapabilities,
  skills: ModelSkills,
  priority: Schema.optional(Schema.Finite),
  tags: Schema.optional(Schema.Array(Schema.String)),
  timestamp: EpochMillis
})
export type WorkerRegistration = typeof WorkerRegistration.Type

export const RequestCounters = Schema.Struct({
  active: NonNegativeInt,
  total: NonNegativeInt,
  succeeded: NonNegativeInt,
  failed: NonNegativeInt
})
export type RequestCounters = typeof RequestCounters.Type

/**
 * extension (issue 16): an engine's prompt (prefix) cache since the worker started. A request is a
 * hit when any of its prompt was served from the cache; `cachedTokens / promptTokens` is the share
 * of prompt tokens that needed no prefill (the hit rate vLLM and SGLang report).
 */
export const PromptCacheStats = Schema.Struct({
  hits: NonNegativeInt,
  misses: NonNegativeInt,
  cachedTokens: NonNegativeInt,
  promptTokens: NonNegativeInt
})
export type PromptCacheStats = typeof PromptCacheStats.Type

/**
 * Most controllers a heartbeat's `activeByController` may name. A worker reports its busiest
 * `REPORTED_CONTROLLERS`; the schema accepts more, so that a later worker may report a few more
 * without its heartbeats being dropped by this controller.
 */
export const MAX_CONTROLLERS_PER_HEARTBEAT = 64
export const REPORTED_CONTROLLERS = 16

export const ActiveByController = Schema.Record({ key: ControllerId, value: NonNegativeInt }).pipe(
  Schema.filter((r) => Object.keys(r).length <= MAX_CONTROLLERS_PER_HEARTBEAT || `at most ${MAX_CONTROLLERS_PER_HEARTBEAT} controllers`)
)

export const WorkerMetrics = Schema.Struct({
  /** Fraction of all CPU cores busy since the previous heartbeat, 0..1. */
  cpuUsage: NonNegativeNumber,
  /** Fraction of physical memory in use, 0..1. */
  memoryUsage: NonNegativeNumber,
  requests: RequestCounters,
  /** Tokens produced per second over the last heartbeat interval. */
  tokensPerSecond: Schema.optional(NonNegativeNumber),
  /** extension: the engine's prompt cache, for engines that report one (the synthetic engine). */
  promptCache: Schema.optional(PromptCacheStats),
  /**
   * extension (issue 14): of `requests.active`, how many each controller owns (by the requests'
   * `controllerId`; requests without one are in no entry). Several controllers balance on it.
   */
  activeByController: Schema.optional(ActiveByController),
  /** extension (issue 14): the worker's own `max_concurrent`: past it, it refuses `busy`. */
  maxConcurrent: Schema.optional(NonNegativeInt),
  /** extension (issue 14): most requests running at once since the previous heartbeat. */
  peakActive: Schema.optional(NonNegativeInt)
})
export type WorkerMetrics = typeof WorkerMetrics.Type

export const WorkerHeartbeat = Schema.Struct({
  workerId: WorkerId,
  timestamp: EpochMillis,
  metrics: WorkerMetrics
})
export type WorkerHeartbeat = typeof WorkerHeartbeat.Type

export const WorkerDeregistration = Schema.Struct({
  workerId: WorkerId,
  timestamp: EpochMillis
})
export type WorkerDeregistration = typeof WorkerDeregistration.Type

export const ControllerAnnounce = Schema.Struct({
  controllerId: Schema.String,
  timestamp: EpochMillis
})
export type ControllerAnnounce = typeof ControllerAnnounce.Type

/**
 * extension (issue 14): a worker asks `controller.{controllerId}.probe` whether the controller that
 * owns its requests is alive; the controller answers at once from its NATS callback. No responders,
 * or two probes in a row without an answer: the worker stops that controller's requests.
 */
export const ControllerProbe = Schema.Struct({ workerId: WorkerId })
export type ControllerProbe = typeof ControllerProbe.Type
export const ControllerProbeReply = Schema.Struct({ controllerId: ControllerId })
export type ControllerProbeReply = typeof ControllerProbeReply.Type

export const WorkerStatus = Schema.Literal("online", "offline", "degraded")
export type WorkerStatus = typeof WorkerStatus.Type

/** The controller's view of one worker: its registration plus what the controller observed. */
export const WorkerInfo = Schema.Struct({
  ...WorkerRegistration.fields,
  status: WorkerStatus,
  statusReason: Schema.optional(Schema.String),
  metrics: Schema.optional(WorkerMetrics),
  lastHeartbeat: EpochMillis,
  registeredAt: EpochMillis
})
export type WorkerInfo = typeof WorkerInfo.Type

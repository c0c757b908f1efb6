import { HashMap } from "effect"
import * as State from "../../../src/controller/registry-state.js"
import { WorkerId } from "../../../src/domain/ids.js"
import type {
  WorkerHeartbeat,
  WorkerInfo,
  WorkerMetrics,
  WorkerRegistration
} from "../../../src/domain/worker.js"

/** The model a fake worker serves unless its spec names others. */
export const MODEL = "m/Model-7B"

export interface WorkerSpec {
  readonly id: string
  readonly models?: ReadonlyArray<string>
  readonly modelSizes?: Readonly<Record<string, number>>
  readonly gpuMemoryGB?: number
  readonly maxConcurrent?: number
  readonly priority?: number
  readonly tags?: ReadonlyArray<string>
  readonly timestamp?: number
  /** `capabilities.continuation` (issue 13): the kinds of request the worker can continue. */
  readonly continuation?: ReadonlyArray<string>
  /** `capabilities.probes` (issue 13): the worker answers `worker.{id}.probe`. */
  readonly probes?: boolean
  /** `capabilities.features` (issue 12); absent: an older worker's registration. */
  readonly features?: ReadonlyArray<string>
  readonly modelFeatures?: Readonly<Record<string, ReadonlyArray<string>>>
}

export const registration = (spec: WorkerSpec): WorkerRegistration => ({
  workerId: WorkerId.make(spec.id),
  hostname: `${spec.id}.local`,
  ip: "10.0.0.1",
  port: 0,
  hardware: {
    platform: "darwin",
    arch: "arm64",
    chip: "Apple M2 Max",
    cpuCores: 12,
    gpuCores: 38,
    gpuMemoryGB: spec.gpuMemoryGB ?? 48,
    totalMemoryGB: 64
  },
  capabilities: {
    maxConcurrent: spec.maxConcurrent ?? 4,
    supportsStreaming: true,
    engine: "synthetic",
    ...(spec.continuation !== undefined ? { continuation: [...spec.continuation] } : {}),
    ...(spec.probes !== undefined ? { probes: spec.probes } : {}),
    ...(spec.features === undefined ? {} : { features: [...spec.features] }),
    ...(spec.modelFeatures === undefined ? {} : { modelFeatures: spec.modelFeatures })
  },
  skills: {
    availableModels: [...(spec.models ?? [MODEL])],
    modelPaths: Object.fromEntries((spec.models ?? [MODEL]).map((m) => [m, `/models/${m}`])),
    modelSizes: { ...spec.modelSizes },
    totalModelSize: Object.values(spec.modelSizes ?? {}).reduce((a, b) => a + b, 0),
    lastScanned: 0
  },
  ...(spec.priority !== undefined ? { priority: spec.priority } : {}),
  ...(spec.tags !== undefined ? { tags: [...spec.tags] } : {}),
  timestamp: spec.timestamp ?? 0
})

export const metrics = (active: number): WorkerMetrics => ({
  cpuUsage: 0.1,
  memoryUsage: 0.2,
  requests: { active, total: active, succeeded: 0, failed: 0 }
})

export const heartbeat = (id: string, active = 0, timestamp = 0): WorkerHeartbeat => ({
  workerId: WorkerId.make(id),
  timestamp,
  metrics: metrics(active)
})

export interface InfoSpec extends WorkerSpec {
  readonly status?: WorkerInfo["status"]
  /** Reported `metrics.requests.active`; no metrics when absent. */
  readonly active?: number
}

/** A registry entry as the balancer sees it. */
export const info = (spec: InfoSpec): WorkerInfo => ({
  ...registration(spec),
  status: spec.status ?? "online",
  ...(spec.active !== undefined ? { metrics: metrics(spec.active) } : {}),
  lastHeartbeat: 0,
  registeredAt: 0
})

/**
 * A registry state holding exactly `workers` as given (status, metrics and all), built through the
 * registry's own transitions so that its indexes are the real ones.
 */
export const stateOf = (workers: ReadonlyArray<WorkerInfo>): State.RegistryState =>
  workers.reduce((s, w) => {
    const registered = State.applyRegistration(s, w, 0).state
    if (w.status === "offline") return State.markOffline(registered, w.workerId, w.statusReason ?? "offline").state
    return { ...registered, workers: HashMap.set(registered.workers, w.workerId, w) }
  }, State.empty)

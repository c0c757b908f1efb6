import { Clock, Effect } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ControllerState, ClusterMode } from "../domain/cluster.js"
import type { DashboardAffinity, DashboardModel, DashboardSnapshot, DashboardWorker } from "../domain/dashboard.js"
import type { WorkerInfo } from "../domain/worker.js"
import { VERSION } from "../version.js"
import { AdmissionQueue } from "./admission-queue.js"
import type { AffinityCounts } from "./affinity-tracker.js"
import { Balancer } from "./balancer.js"
import { type ActivitySnapshot, ClusterActivity, RATE_WINDOW_SECONDS } from "./cluster-activity.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { Registry } from "./registry.js"
import { type RequestCountsSnapshot, RequestStats, successRate } from "./request-stats.js"

const byId = (a: WorkerInfo, b: WorkerInfo) => (a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0)
const rank = { online: 0, degraded: 1, offline: 2 } as const

/** One worker as the dashboard shows it: an offline worker carries no load (its last report is stale). */
export const dashboardWorker = (w: WorkerInfo, now: number): DashboardWorker => {
  const online = w.status === "online"
  return {
    workerId: w.workerId,
    hostname: w.hostname,
    status: w.status,
    ...(w.statusReason === undefined || online ? {} : { statusReason: w.statusReason }),
    ...(w.hardware.chip === undefined ? {} : { chip: w.hardware.chip }),
    cpuCores: w.hardware.cpuCores,
    ...(w.hardware.gpuCores === undefined ? {} : { gpuCores: w.hardware.gpuCores }),
    gpuMemoryGB: w.hardware.gpuMemoryGB,
    totalMemoryGB: w.hardware.totalMemoryGB,
    engine: w.capabilities.engine,
    models: w.skills.availableModels,
    tags: w.tags ?? [],
    active: online ? (w.metrics?.requests.active ?? 0) : 0,
    maxConcurrent: w.capabilities.maxConcurrent,
    tokensPerSecond: online ? (w.metrics?.tokensPerSecond ?? 0) : 0,
    requestsServed: w.metrics?.requests.total ?? 0,
    lastHeartbeatAgeMs: Math.max(0, now - w.lastHeartbeat)
  }
}

/** Every model some worker holds, with who serves it and its recent rates. */
export const dashboardModels = (workers: ReadonlyArray<WorkerInfo>, activity: ActivitySnapshot): Array<DashboardModel> => {
  const byModel = new Map<string, { online: Array<string>; offline: Array<string> }>()
  for (const w of workers) {
    for (const model of w.skills.availableModels) {
      const entry = byModel.get(model) ?? { online: [], offline: [] }
      byModel.set(model, entry)
      ;(w.status === "online" ? entry.online : entry.offline).push(w.workerId)
    }
  }
  return [...byModel.keys()].sort().map((model) => {
    const entry = byModel.get(model) ?? { online: [], offline: [] }
    const rates = activity.models.get(model)
    return {
      model,
      workers: entry.online,
      offlineWorkers: entry.offline,
      requestsPerSecond: rates?.requestsPerSecond ?? 0,
      tokensPerSecond: rates?.tokensPerSecond ?? 0
    }
  })
}

export interface DashboardInputs {
  readonly now: number
  readonly startedAt: number
  readonly mode: ClusterMode
  readonly state: ControllerState
  readonly workers: ReadonlyArray<WorkerInfo>
  readonly requests: RequestCountsSnapshot
  readonly queued: number
  readonly activity: ActivitySnapshot
  /** Dispatch verdicts of prefix affinity; undefined when it is off (or the strategy is not `smart`). */
  readonly affinity: AffinityCounts | undefined
}

export const dashboardAffinity = (counts: AffinityCounts | undefined): DashboardAffinity => {
  const { hit, displaced, miss } = counts ?? { hit: 0, displaced: 0, miss: 0 }
  return {
    enabled: counts !== undefined,
    hits: hit,
    displaced,
    misses: miss,
    hitRate: hit + displaced === 0 ? null : hit / (hit + displaced)
  }
}

/** The snapshot from what the services hold now (pure, for tests). */
export const dashboardSnapshot = (i: DashboardInputs): DashboardSnapshot => ({
  at: i.now,
  controller: {
    version: VERSION,
    mode: i.mode,
    state: i.state,
    uptimeMs: Math.max(0, i.now - i.startedAt),
    requestsPerSecond: i.activity.requestsPerSecond,
    tokensPerSecond: i.activity.tokensPerSecond,
    inFlight: i.requests.active,
    queued: i.queued,
    requests: {
      active: i.requests.active,
      total: i.requests.total,
      succeeded: i.requests.succeeded,
      failed: i.requests.failed,
      cancelled: i.requests.cancelled
    },
    successRate: successRate(i.requests),
    ttftP50Ms: i.activity.ttftP50Ms,
    ttftP95Ms: i.activity.ttftP95Ms,
    ttftSamples: i.activity.ttftSamples,
    retries: i.activity.retries,
    cancels: i.activity.cancels,
    affinity: dashboardAffinity(i.affinity),
    rateWindowSeconds: RATE_WINDOW_SECONDS
  },
  workers: [...i.workers]
    .sort((a, b) => rank[a.status] - rank[b.status] || byId(a, b))
    .map((w) => dashboardWorker(w, i.now)),
  models: dashboardModels(i.workers, i.activity),
  series: i.activity.series,
  failures: i.activity.failures
})

/** Snapshots for `/dashboard`, read from the registry, the statistics, the queue and the activity. */
export class ClusterDashboard extends Effect.Service<ClusterDashboard>()("controller/ClusterDashboard", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const registry = yield* Registry
    const stats = yield* RequestStats
    const queue = yield* AdmissionQueue
    const lifecycle = yield* ControllerLifecycle
    const activity = yield* ClusterActivity
    const balancer = yield* Balancer
    const affinityOn = balancer.affinity.enabled && config.loadBalancing.strategy === "smart"
    const snapshot: Effect.Effect<DashboardSnapshot> = Effect.gen(function* () {
      return dashboardSnapshot({
        now: yield* Clock.currentTimeMillis,
        startedAt: lifecycle.startedAt,
        mode: config.mode,
        state: yield* lifecycle.state,
        workers: yield* registry.all,
        requests: yield* stats.snapshot,
        queued: yield* queue.pending,
        activity: yield* activity.snapshot,
        affinity: affinityOn ? balancer.affinity.counts() : undefined
      })
    })
    return { snapshot } as const
  }),
  dependencies: [AdmissionQueue.Default, Balancer.Default, ClusterActivity.Default, ControllerLifecycle.Default, Registry.Default, RequestStats.Default]
}) {}

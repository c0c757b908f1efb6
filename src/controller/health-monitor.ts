import { Duration, Effect, Layer } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { LoadMonitor } from "./load-monitor.js"
import { Registry } from "./registry.js"

/**
 * Health monitoring (docs/contract.md §5.1): every `discovery.health_check_interval_ms` the Registry marks workers
 * silent for more than `offline_timeout_ms` (plus the controller's own recent event-loop stalls) offline and prunes offline workers past
 * `prune_after_ms`. The first sweep runs one interval after the layer starts (a worker that just
 * registered cannot be overdue yet), then one per interval, measured from the end of the previous
 * sweep. The fiber belongs to the layer's scope and stops with it.
 */
export const HealthMonitorLive: Layer.Layer<never, never, Registry | ClusterConfigService | LoadMonitor> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const registry = yield* Registry
    const config = yield* ClusterConfigService
    const interval = Duration.millis(config.discovery.healthCheckIntervalMs)
    const monitor = yield* LoadMonitor
    // A worker is judged by what it did, not by when the controller got round to looking: time the
    // controller's own event loop spent stalled is not counted as the worker's silence.
    const sweep = Effect.suspend(() => registry.sweep(monitor.maxLagMs(config.discovery.offlineTimeoutMs)))
    yield* Effect.sleep(interval).pipe(Effect.zipRight(sweep), Effect.forever, Effect.forkScoped)
  })
)

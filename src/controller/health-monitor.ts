import { Duration, Effect, Layer } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { Registry } from "./registry.js"

/**
 * Health monitoring (PRD §3): every `discovery.health_check_interval_ms` the Registry marks workers
 * silent for more than `offline_timeout_ms` offline and prunes offline workers past
 * `prune_after_ms`. The first sweep runs one interval after the layer starts (a worker that just
 * registered cannot be overdue yet), then one per interval, measured from the end of the previous
 * sweep. The fiber belongs to the layer's scope and stops with it.
 */
export const HealthMonitorLive: Layer.Layer<never, never, Registry | ClusterConfigService> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const registry = yield* Registry
    const config = yield* ClusterConfigService
    const interval = Duration.millis(config.discovery.healthCheckIntervalMs)
    yield* Effect.sleep(interval).pipe(Effect.zipRight(registry.sweep), Effect.forever, Effect.forkScoped)
  })
)

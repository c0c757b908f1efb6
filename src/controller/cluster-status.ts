import { Effect } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ClusterStatus } from "../domain/cluster.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { Registry } from "./registry.js"
import { RequestStats, successRate } from "./request-stats.js"
import { VERSION } from "../version.js"

/** The answer of `GET /api/cluster/status` and of the RPC `ClusterStatus`, from the live services. */
export class ClusterStatusQuery extends Effect.Service<ClusterStatusQuery>()("controller/ClusterStatusQuery", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const registry = yield* Registry
    const stats = yield* RequestStats
    const lifecycle = yield* ControllerLifecycle
    const status: Effect.Effect<ClusterStatus> = Effect.gen(function* () {
      const counts = yield* registry.counts
      const requests = yield* stats.snapshot
      return {
        controller: {
          version: VERSION,
          uptime: Date.now() - lifecycle.startedAt,
          mode: config.mode,
          state: yield* lifecycle.state
        },
        workers: counts,
        requests: {
          active: requests.active,
          total: requests.total,
          succeeded: requests.succeeded,
          failed: requests.failed,
          cancelled: requests.cancelled,
          successRate: successRate(requests)
        }
      }
    })
    return { status } as const
  }),
  dependencies: [ControllerLifecycle.Default, Registry.Default, RequestStats.Default]
}) {}

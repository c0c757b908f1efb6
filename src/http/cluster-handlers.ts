import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import { Effect, Option } from "effect"
import { ClusterDashboard } from "../controller/cluster-dashboard.js"
import { ClusterStatusQuery } from "../controller/cluster-status.js"
import { ControllerLifecycle } from "../controller/lifecycle.js"
import { Registry } from "../controller/registry.js"
import { NotReady, ServedApi } from "../domain/api.js"
import { WorkerNotFound } from "../domain/errors.js"

/** `/api/cluster/*`: straight reads of the registry, the statistics and the dashboard's snapshot. */
export const ClusterHandlersLive = HttpApiBuilder.group(ServedApi, "cluster", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const query = yield* ClusterStatusQuery
    const dashboard = yield* ClusterDashboard
    return handlers
      .handle("status", () => query.status)
      .handle("workers", () => registry.all)
      .handle("worker", ({ path }) =>
        registry.get(path.id).pipe(
          Effect.flatMap(Option.match({ onNone: () => Effect.fail(new WorkerNotFound({ workerId: path.id })), onSome: Effect.succeed }))
        )
      )
      .handle("dashboard", () => dashboard.snapshot)
  })
)

/** `/health` answers while the process serves; `/ready` once ready with at least one online worker. */
export const HealthHandlersLive = HttpApiBuilder.group(ServedApi, "health", (handlers) =>
  Effect.gen(function* () {
    const registry = yield* Registry
    const lifecycle = yield* ControllerLifecycle
    return handlers
      .handle("health", () => Effect.succeed({ status: "ok" as const }))
      .handle("ready", () =>
        Effect.gen(function* () {
          const state = yield* lifecycle.state
          const onlineWorkers = (yield* registry.counts).online
          if (state !== "ready" || onlineWorkers === 0) {
            return yield* new NotReady({ ready: false, state, onlineWorkers })
          }
          return { ready: true, state, onlineWorkers }
        })
      )
  })
)

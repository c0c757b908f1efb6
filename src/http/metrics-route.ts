import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Layer, Metric } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { AdmissionQueue } from "../controller/admission-queue.js"
import { clusterGauges, PREFIX } from "../controller/metrics.js"
import { familiesFromRegistry, renderFamilies } from "../controller/prometheus-text.js"
import { Registry } from "../controller/registry.js"
import { RequestStats } from "../controller/request-stats.js"
import { VERSION } from "../version.js"

/**
 * `/metrics` in Prometheus text format: the cluster's metrics from Effect's registry (names
 * starting `mlx_cluster_`), the gauges read from the live services at scrape time, and Effect's
 * runtime metrics (`effect_*`) only with `metrics.runtime: true`.
 */
export class PrometheusMetrics extends Effect.Service<PrometheusMetrics>()("http/PrometheusMetrics", {
  effect: Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const registry = yield* Registry
    const stats = yield* RequestStats
    const queue = yield* AdmissionQueue
    const runtime = config.metrics.runtime
    const scrape = Effect.gen(function* () {
      const view = {
        workers: yield* registry.all,
        inFlight: (yield* stats.snapshot).active,
        queued: yield* queue.pending,
        version: VERSION
      }
      const gauges = clusterGauges(view)
      // The scrape-time gauges win over registry entries of the same name.
      const reserved = new Set(gauges.map((g) => g.name))
      const accept = (name: string) =>
        reserved.has(name) ? false : name.startsWith(PREFIX) || (runtime && name.startsWith("effect_"))
      return renderFamilies([...familiesFromRegistry(yield* Metric.snapshot, accept), ...gauges])
    })
    return { scrape } as const
  }),
  dependencies: [AdmissionQueue.Default, Registry.Default, RequestStats.Default]
}) {}

/** `GET /metrics`. */
export const MetricsRouteLive = HttpLayerRouter.use((router) =>
  Effect.gen(function* () {
    const metrics = yield* PrometheusMetrics
    yield* router.add(
      "GET",
      "/metrics",
      metrics.scrape.pipe(
        Effect.map((text) => HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" }))
      )
    )
  })
).pipe(Layer.provide(PrometheusMetrics.Default))

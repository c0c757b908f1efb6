import { Metrics, Resource } from "@effect/opentelemetry"
import { HttpLayerRouter, HttpServerResponse } from "@effect/platform"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import { Effect, Layer, Metric } from "effect"
import { workersGauge } from "../controller/metrics.js"
import { Registry } from "../controller/registry.js"
import { VERSION } from "../version.js"

/**
 * Effect's metrics in Prometheus text format: Effect's `Metric` registry is read by
 * @effect/opentelemetry's producer and serialized by OpenTelemetry's Prometheus exporter, so the
 * exposition format is theirs, not ours. The exporter runs without its own HTTP server; `/metrics`
 * on the controller's port scrapes it.
 */
export class PrometheusMetrics extends Effect.Service<PrometheusMetrics>()("http/PrometheusMetrics", {
  scoped: Effect.gen(function* () {
    const exporter = new PrometheusExporter({ preventServerStart: true })
    const producer = yield* Metrics.makeProducer
    yield* Metrics.registerProducer(producer, () => exporter)
    const serializer = new PrometheusSerializer()
    const registry = yield* Registry
    const scrape = Effect.gen(function* () {
      // Worker counts are a view of the registry: set them at scrape time rather than on every change.
      const counts = yield* registry.counts
      yield* Metric.set(Metric.tagged(workersGauge, "status", "online"), counts.online)
      yield* Metric.set(Metric.tagged(workersGauge, "status", "offline"), counts.offline)
      const { resourceMetrics } = yield* Effect.promise(() => exporter.collect())
      return serializer.serialize(resourceMetrics)
    })
    return { scrape } as const
  }),
  dependencies: [Resource.layer({ serviceName: "mlx-cluster-controller", serviceVersion: VERSION })]
}) {}

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

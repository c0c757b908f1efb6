import { Metric, MetricBoundaries } from "effect"

/**
 * The controller's metrics, defined once with Effect's `Metric` API and exported at `/metrics` in
 * Prometheus text format. Names follow Prometheus conventions (unit suffixes, `_total` counters).
 */
const latencyBoundaries = MetricBoundaries.exponential({ start: 1, factor: 2, count: 18 }) // 1 ms … 131 s, then +Inf

export const requestsTotal = Metric.counter("mlx_cluster_requests_total", {
  description: "Inference requests finished, by route, model and outcome",
  incremental: true
})

export const timeToFirstTokenMs = Metric.histogram(
  "mlx_cluster_time_to_first_token_ms",
  latencyBoundaries,
  "Dispatch to first relayed token, in milliseconds"
)

export const requestDurationMs = Metric.histogram(
  "mlx_cluster_request_duration_ms",
  latencyBoundaries,
  "Whole inference request, in milliseconds"
)

export const tokensRelayed = Metric.counter("mlx_cluster_tokens_relayed_total", {
  description: "Tokens relayed from workers to clients",
  incremental: true
})

export const queueDepth = Metric.gauge("mlx_cluster_queue_depth", {
  description: "Requests waiting for a worker with free capacity"
})

export const retriesTotal = Metric.counter("mlx_cluster_retries_total", {
  description:
    "Dispatches moved to another worker, by reason: no_responders, ack_timeout, invalid_ack, refused, worker_offline, worker_error",
  incremental: true
})

export const cancelsTotal = Metric.counter("mlx_cluster_cancels_total", {
  description: "Cancels sent to workers, by reason",
  incremental: true
})

export const workersGauge = Metric.gauge("mlx_cluster_workers", {
  description: "Workers known to the controller, by status"
})

// ---------------------------------------------------------------------------------------------
// Cache-aware routing (issue 16): src/controller/affinity-tracker.ts updates these on every dispatch,
// whatever the strategy, so that strategies can be compared by the hit rate they would get.

export const affinityTotal = Metric.counter("mlx_cluster_affinity_total", {
  description:
    "Dispatches by prefix affinity: hit (the chosen worker had recently been sent at least min_prefix_tokens of the prompt, and no worker more), displaced (another worker held a longer prefix) or miss (no worker held min_prefix_tokens)",
  incremental: true
})

export const affinityPromptTokensTotal = Metric.counter("mlx_cluster_affinity_prompt_tokens_total", {
  description:
    "Prompt tokens (words) of dispatched requests, by whether the chosen worker had recently been sent them (cached=true|false)",
  incremental: true
})

import { Metric, MetricBoundaries, MetricKey, MetricLabel } from "effect"
import { ErrorTable } from "../domain/errors.js"
import type { WorkerInfo } from "../domain/worker.js"
import type { Family } from "./prometheus-text.js"

/**
 * The controller's metrics, defined once with Effect's `Metric` API and written at `/metrics` in
 * Prometheus text format by `prometheus-text.ts`. Names follow Prometheus's conventions: base
 * units (seconds), a unit suffix (`_seconds`), `_total` on counters, `mlx_cluster_` in front.
 *
 * Labels stay bounded: a model is a label only when some worker registered it (else `unknown`),
 * routes and error codes come from fixed lists (else `other`). Gauges that describe the cluster
 * (workers, in flight, queue depth, per-worker slots) are not here: `/metrics` reads them from the
 * live services at scrape time, so that a pruned worker's series disappears with it.
 */

/** Seconds: 5 ms … 5 min, then +Inf. TTFT sits at the low end, whole requests anywhere. */
export const latencyBoundaries = MetricBoundaries.fromIterable([
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300
])

const requestsKey = MetricKey.counter("mlx_cluster_requests_total", {
  description: "Inference requests finished, by route, model and outcome (succeeded, failed, cancelled)",
  incremental: true
})

const failuresKey = MetricKey.counter("mlx_cluster_request_failures_total", {
  description: "Failed inference requests, by route, model and error code",
  incremental: true
})

const ttftKey = MetricKey.histogram(
  "mlx_cluster_time_to_first_token_seconds",
  latencyBoundaries,
  "From the controller accepting the request (queue wait and earlier attempts included) to the first token, by model"
)

const durationKey = MetricKey.histogram(
  "mlx_cluster_request_duration_seconds",
  latencyBoundaries,
  "Whole inference request, from the controller accepting it to its end, every outcome, by model"
)

const tokensKey = MetricKey.counter("mlx_cluster_tokens_relayed_total", {
  description: "Tokens relayed from workers to clients, by model",
  incremental: true
})

export const retriesTotal = Metric.counter("mlx_cluster_retries_total", {
  description:
    "Dispatches moved to another worker, by reason: no_responders, ack_timeout, invalid_ack, refused, worker_offline, worker_error",
  incremental: true
})

export const requeuesTotal = Metric.counter("mlx_cluster_requeues_total", {
  description:
    "Requests a worker refused as busy (another controller filled it first) and that went back to this controller's admission queue",
  incremental: true
})

export const cancelsTotal = Metric.counter("mlx_cluster_cancels_total", {
  description: "Cancels sent to workers, by reason (client: the client went away; error: timeout, error or drain)",
  incremental: true
})

// ---------------------------------------------------------------------------------------------
// Lost and hung workers (issue 13): src/controller/worker-probes.ts and the Router's migrations.

export const migrationsTotal = Metric.counter("mlx_cluster_migrations_total", {
  description:
    "Streams moved to another worker after theirs was lost or hung mid-stream, by reason: no_responders, unresponsive, deregistered, heartbeat (offline_timeout_ms), other",
  incremental: true
})

export const workerProbesTotal = Metric.counter("mlx_cluster_worker_probes_total", {
  description: "Liveness probes of workers with silent streams, by result: answered, no_responders, timeout",
  incremental: true
})

/** The `reason` label of `mlx_cluster_migrations_total` for a worker's offline reason. */
export const lostReasonLabel = (reason: string): string => {
  if (reason === "no responders") return "no_responders"
  if (reason === "unresponsive") return "unresponsive"
  if (reason === "deregistered") return "deregistered"
  if (reason.startsWith("no heartbeat")) return "heartbeat"
  return "other"
}

// ---------------------------------------------------------------------------------------------
// Cache-aware routing (issue 16): src/controller/affinity-tracker.ts updates these on every dispatch,
// whatever the strategy, so that strategies can be compared by the hit rate they would get.

const affinityKey = MetricKey.counter("mlx_cluster_affinity_total", {
  description:
    "Dispatches by prefix affinity: hit (the chosen worker had recently been sent at least min_prefix_tokens of the prompt, and no worker more), displaced (another worker held a longer prefix) or miss (no worker held min_prefix_tokens)",
  incremental: true
})

const affinityPromptTokensKey = MetricKey.counter("mlx_cluster_affinity_prompt_tokens_total", {
  description:
    "Prompt tokens (words) of dispatched requests, by whether the chosen worker had recently been sent them (cached=true|false)",
  incremental: true
})

export const affinityTotal = Metric.fromMetricKey(affinityKey)
export const affinityPromptTokensTotal = Metric.fromMetricKey(affinityPromptTokensKey)

// ---------------------------------------------------------------------------------------------
// Bounded labels

/** Label values of the `route` label; anything else is `other`. */
const ROUTE_NAMES: ReadonlySet<string> = new Set(["chat", "completions", "ws", "rpc", "internal", "models", "api"])

/** The HTTP paths a refusal may be recorded with, as route names. */
const ROUTE_PATHS: Readonly<Record<string, string>> = {
  "/v1/chat/completions": "chat",
  "/v1/completions": "completions",
  "/v1/models": "models",
  "/ws": "ws",
  "/rpc": "rpc"
}

export const routeLabel = (route: string): string => {
  if (ROUTE_NAMES.has(route)) return route
  const named = ROUTE_PATHS[route]
  if (named !== undefined) return named
  if (route.startsWith("/v1/models/")) return "models"
  if (route.startsWith("/api/")) return "api"
  return "other"
}

/**
 * Codes a client can see beyond the ErrorTable's (docs/contract.md §6.7): the timeouts' own codes,
 * the WebSocket's, and those a worker or its engine sends. An upstream's own 4xx code is `other`.
 */
const WIRE_CODES = [
  "upgrade_required",
  "too_many_requests",
  "first_token_timeout",
  "stream_idle_timeout",
  "request_timeout",
  "worker_lost",
  "token_gap",
  "timeout",
  "worker_shutdown",
  "controller_gone",
  "internal_error",
  "engine_start_failed",
  "engine_stopped",
  "continuation_unsupported",
  "upstream_error",
  "upstream_unreachable",
  "upstream_disconnected",
  "upstream_malformed"
]

/** Every label value of the `code` label: a bounded set, whatever workers or upstreams send. */
const ERROR_CODES: ReadonlySet<string> = new Set([...Object.values(ErrorTable).map((row) => row.code), ...WIRE_CODES])

export const codeLabel = (code: string | undefined): string =>
  code === undefined || code === "" ? "unknown" : ERROR_CODES.has(code) ? code : "other"

/** A model some worker registered keeps its name; anything a client made up is `unknown`. */
export const modelLabel = (model: string, known: boolean): string => (known && model !== "" ? model : "unknown")

// ---------------------------------------------------------------------------------------------
// Cached children

/**
 * Effect resolves the registry entry of a tagged metric on every update (`Metric.tagged` hashes a
 * new key each time). A child made from the tagged *key* resolves it once; children are cached by
 * their label values, which are bounded (above). The cap only guards against a bug upstream.
 */
const MAX_CHILDREN = 10_000

/** `make(key with labels)`, cached by label values. */
const family = <M>(labelNames: ReadonlyArray<string>, make: (labels: ReadonlyArray<MetricLabel.MetricLabel>) => M) => {
  const children = new Map<string, M>()
  return (...values: ReadonlyArray<string>): M => {
    const id = values.join("\u0000")
    let child = children.get(id)
    if (child === undefined) {
      if (children.size >= MAX_CHILDREN) children.clear()
      child = make(labelNames.map((name, i) => MetricLabel.make(name, values[i] ?? "")))
      children.set(id, child)
    }
    return child
  }
}

const counterFamily = (key: MetricKey.MetricKey.Counter<number>, labelNames: ReadonlyArray<string>) =>
  family(labelNames, (labels) => Metric.fromMetricKey(MetricKey.taggedWithLabels(key, labels)))

const histogramFamily = (key: MetricKey.MetricKey.Histogram, labelNames: ReadonlyArray<string>) =>
  family(labelNames, (labels) => Metric.fromMetricKey(MetricKey.taggedWithLabels(key, labels)))

/** `mlx_cluster_requests_total{route, model, outcome}`. */
export const requestsChild = counterFamily(requestsKey, ["route", "model", "outcome"])
/** `mlx_cluster_request_failures_total{route, model, code}`. */
export const failuresChild = counterFamily(failuresKey, ["route", "model", "code"])
/** `mlx_cluster_time_to_first_token_seconds{model}`. */
export const ttftChild = histogramFamily(ttftKey, ["model"])
/** `mlx_cluster_request_duration_seconds{model}`. */
export const durationChild = histogramFamily(durationKey, ["model"])
/** `mlx_cluster_tokens_relayed_total{model}`. */
export const tokensChild = counterFamily(tokensKey, ["model"])
/** `mlx_cluster_affinity_total{result}`: updated on every dispatch (`affinity-tracker.ts`). */
export const affinityChild = counterFamily(affinityKey, ["result"])
/** `mlx_cluster_affinity_prompt_tokens_total{cached}`. */
export const affinityPromptTokensChild = counterFamily(affinityPromptTokensKey, ["cached"])

// ---------------------------------------------------------------------------------------------
// Read at scrape time

/** Effect's registry entries named so are written at `/metrics`; the rest only with `metrics.runtime`. */
export const PREFIX = "mlx_cluster_"

/** What the scrape-time gauges are read from. */
export interface ClusterView {
  readonly workers: ReadonlyArray<WorkerInfo>
  /** Requests the Router handles now (queued ones included). */
  readonly inFlight: number
  readonly queued: number
  readonly version: string
}

const STATUSES = ["online", "offline", "degraded"] as const

/**
 * Gauges that describe the cluster now, computed from the live services at each scrape: one
 * series per registered worker (a pruned worker's series goes with it), and no stale load for an
 * offline worker. Their names are reserved: registry entries of the same name are not written.
 */
export const clusterGauges = (view: ClusterView): Array<Family> => {
  const sorted = [...view.workers].sort((a, b) => (a.workerId < b.workerId ? -1 : a.workerId > b.workerId ? 1 : 0))
  const perWorker = (value: (w: WorkerInfo, online: boolean) => number) =>
    sorted.map((w) => ({ labels: [["worker", w.workerId]] as const, value: value(w, w.status === "online") }))
  return [
    {
      name: "mlx_cluster_build_info",
      help: "The controller's version (always 1)",
      type: "gauge",
      samples: [{ labels: [["version", view.version]], value: 1 }]
    },
    {
      name: "mlx_cluster_workers",
      help: "Workers in this controller's registry, by status",
      type: "gauge",
      samples: STATUSES.map((status) => ({
        labels: [["status", status]] as const,
        value: view.workers.filter((w) => w.status === status).length
      }))
    },
    {
      name: "mlx_cluster_requests_in_flight",
      help: "Inference requests this controller is handling now, queued ones included",
      type: "gauge",
      samples: [{ labels: [], value: view.inFlight }]
    },
    {
      name: "mlx_cluster_queue_depth",
      help: "Requests waiting in the admission queue for a worker with a free slot",
      type: "gauge",
      samples: [{ labels: [], value: view.queued }]
    },
    {
      name: "mlx_cluster_worker_online",
      help: "1 while the worker is online, else 0",
      type: "gauge",
      samples: perWorker((_, online) => (online ? 1 : 0))
    },
    {
      name: "mlx_cluster_worker_active_requests",
      help: "Requests running on the worker (slots in use), as it last reported; 0 once offline",
      type: "gauge",
      samples: perWorker((w, online) => (online ? (w.metrics?.requests.active ?? 0) : 0))
    },
    {
      name: "mlx_cluster_worker_max_concurrent",
      help: "The worker's slots (worker.max_concurrent)",
      type: "gauge",
      samples: perWorker((w) => w.capabilities.maxConcurrent)
    },
    {
      name: "mlx_cluster_worker_tokens_per_second",
      help: "Tokens per second the worker produced over its last heartbeat interval; 0 once offline",
      type: "gauge",
      samples: perWorker((w, online) => (online ? (w.metrics?.tokensPerSecond ?? 0) : 0))
    }
  ]
}


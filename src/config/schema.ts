import { Schema } from "effect"
import { ClusterMode } from "../domain/cluster.js"
import { DEFAULT_OPENAI_FEATURES, FeatureName } from "../domain/features.js"
import { WorkerIdString } from "../domain/ids.js"

/**
 * The config file of docs/contract.md §2: YAML with snake_case keys, decoded into camelCase fields.
 * Every key is optional; the defaults here are the contract's. Keys beyond the contract are marked
 * "extension" and documented in the README.
 */
const key = <S extends Schema.Schema.Any>(name: string, schema: S, fallback: () => Schema.Schema.Type<S>) =>
  Schema.optionalWith(schema, { default: fallback as never }).pipe(Schema.fromKey(name))

const Millis = Schema.Number.pipe(Schema.int(), Schema.nonNegative())
const PositiveMillis = Schema.Number.pipe(Schema.int(), Schema.positive())
const Port = Schema.Number.pipe(Schema.int(), Schema.between(0, 65535))
const Count = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

export const RateLimitConfig = Schema.Struct({
  enabled: key("enabled", Schema.Boolean, () => false),
  requestsPerMinute: key("requests_per_minute", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 600)
})

export const ApiConfig = Schema.Struct({
  corsEnabled: key("cors_enabled", Schema.Boolean, () => true),
  corsOrigins: key("cors_origins", Schema.Array(Schema.String), () => ["*"]),
  apiKeys: key("api_keys", Schema.Array(Schema.Redacted(Schema.String)), () => []),
  rateLimit: key("rate_limit", RateLimitConfig, () => RateLimitConfig.make({ enabled: false, requestsPerMinute: 600 })),
  /** extension: failed authentications per client address and minute; past it the address gets 429. */
  authFailuresPerMinute: key("auth_failures_per_minute", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 30),
  /** extension: largest accepted request body. */
  maxBodyBytes: key("max_body_bytes", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 1_048_576),
  /**
   * extension: the largest `max_tokens` (or `max_completion_tokens`) a request may ask for; above
   * it the request is a 400 naming the field. null: no limit. A request without one is not given
   * one: the engine's own limit applies (issue 12).
   */
  maxTokensCeiling: key("max_tokens_ceiling", Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.positive())), () => null),
  /** extension: WebSocket keep-alive ping period. */
  wsPingIntervalMs: key("ws_ping_interval_ms", PositiveMillis, () => 30_000),
  /**
   * extension: bytes waiting to be sent to one client (an SSE stream, a WebSocket) past which its
   * requests end with `slow_consumer` and the workers' work is cancelled.
   */
  maxBufferedBytes: key("max_buffered_bytes", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 1024 * 1024),
  /** extension: requests one WebSocket may run at once. */
  wsMaxRequestsPerSocket: key("ws_max_requests_per_socket", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 64)
})

export const OverloadConfig = Schema.Struct({
  /** New requests get 429 `overloaded` while the event loop lags more than this (0: never). */
  maxEventLoopLagMs: key("max_event_loop_lag_ms", Millis, () => 500)
})

export const QueueConfig = Schema.Struct({
  maxPending: key("max_pending", Count, () => 1000),
  maxWaitMs: key("max_wait_ms", Millis, () => 30_000)
})

/** Corrections of a worker's self-reported hardware (the worker's `worker.hardware` uses it too). */
export const HardwareOverrides = Schema.Struct({
  platform: Schema.optional(Schema.String),
  arch: Schema.optional(Schema.String),
  chip: Schema.optional(Schema.String),
  cpuCores: Schema.optional(Count).pipe(Schema.fromKey("cpu_cores")),
  gpuCores: Schema.optional(Count).pipe(Schema.fromKey("gpu_cores")),
  gpuMemoryGB: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(Schema.fromKey("gpu_memory_gb")),
  totalMemoryGB: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(Schema.fromKey("total_memory_gb"))
})
export type HardwareOverrides = typeof HardwareOverrides.Type

/**
 * extension: what the controller believes about one worker instead of what it reports
 * (`controller.worker_overrides.<id>`). Self-reported values are bounded; these are taken as given.
 */
export const WorkerOverride = Schema.Struct({
  priority: Schema.optional(Schema.Finite),
  maxConcurrent: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())).pipe(Schema.fromKey("max_concurrent")),
  tags: Schema.optional(Schema.Array(Schema.String)),
  hardware: Schema.optional(HardwareOverrides)
})
export type WorkerOverride = typeof WorkerOverride.Type

/**
 * extension (issue 13): liveness probes of workers whose streams fell silent. While one of a
 * worker's streams has been silent longer than max(`min_silence_ms`, `gap_factor` × its own mean
 * gap between messages) — or is still waiting for its first token that long — the controller asks
 * `worker.{id}.probe`, one probe per worker at a time. No responders: the worker is gone;
 * `max_misses` probes in a row unanswered within `timeout_ms`: it is hung (`unresponsive`). Either
 * way it goes offline at once and its streams move on (`migration_limit`) or end.
 */
export const WorkerProbeConfig = Schema.Struct({
  enabled: key("enabled", Schema.Boolean, () => true),
  minSilenceMs: key("min_silence_ms", PositiveMillis, () => 500),
  gapFactor: key("gap_factor", Schema.Number.pipe(Schema.positive(), Schema.finite()), () => 4),
  timeoutMs: key("timeout_ms", PositiveMillis, () => 1_000),
  maxMisses: key("max_misses", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 2)
})
export type WorkerProbeConfig = typeof WorkerProbeConfig.Type

export const ControllerConfig = Schema.Struct({
  bindAddress: key("bind_address", Schema.String, () => "0.0.0.0"),
  port: key("port", Port, () => 8080),
  api: key("api", ApiConfig, () => Schema.decodeSync(ApiConfig)({})),
  requestTimeoutMs: key("request_timeout_ms", PositiveMillis, () => 120_000),
  firstTokenTimeoutMs: key("first_token_timeout_ms", PositiveMillis, () => 30_000),
  streamIdleTimeoutMs: key("stream_idle_timeout_ms", PositiveMillis, () => 30_000),
  maxRetries: key("max_retries", Count, () => 2),
  /** extension: how long a worker has to ack or refuse an inference request. */
  dispatchTimeoutMs: key("dispatch_timeout_ms", PositiveMillis, () => 2_000),
  queue: key("queue", QueueConfig, () => Schema.decodeSync(QueueConfig)({})),
  /** extension: load shedding (issue 11). */
  overload: key("overload", OverloadConfig, () => Schema.decodeSync(OverloadConfig)({})),
  drainTimeoutMs: key("drain_timeout_ms", Millis, () => 30_000),
  /**
   * extension (issue 13): times one stream may move to another worker after its worker was lost or
   * hung mid-stream (0: never; the stream ends with an error chunk).
   */
  migrationLimit: key("migration_limit", Count, () => 2),
  /** extension (issue 13): liveness probes of workers with silent streams. */
  workerProbe: key("worker_probe", WorkerProbeConfig, () => Schema.decodeSync(WorkerProbeConfig)({})),
  /** extension: when set, registrations and heartbeats of other worker ids are dropped. */
  allowedWorkers: key("allowed_workers", Schema.NullOr(Schema.Array(WorkerIdString)), () => null),
  /** extension: per worker id, values that replace what the worker reports. */
  workerOverrides: key("worker_overrides", Schema.Record({ key: WorkerIdString, value: WorkerOverride }), () => ({}))
})

export const TlsConfig = Schema.Struct({
  caFile: Schema.optional(Schema.String).pipe(Schema.fromKey("ca_file")),
  certFile: Schema.optional(Schema.String).pipe(Schema.fromKey("cert_file")),
  keyFile: Schema.optional(Schema.String).pipe(Schema.fromKey("key_file"))
})

export const NatsMode = Schema.Literal("embedded", "external")

/**
 * extension (issue 14): the embedded nats-server joins a NATS cluster, so that two or three machines
 * each run one and together form one bus that survives any one of them. `routes` are the other
 * members' route addresses (`HOST:PORT` or `nats-route://HOST:PORT`; listing this machine too is
 * harmless); they authenticate with this process's NATS user and password.
 */
export const NatsClusterConfig = Schema.Struct({
  name: key("name", Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_-]+$/)), () => "mlx-cluster"),
  listen: key("listen", Schema.String.pipe(Schema.minLength(1)), () => "0.0.0.0:6222"),
  routes: key("routes", Schema.Array(Schema.String.pipe(Schema.minLength(1))), () => [])
})
export type NatsClusterConfig = typeof NatsClusterConfig.Type

export const NatsConfig = Schema.Struct({
  mode: key("mode", NatsMode, () => "embedded" as const),
  serverUrl: key("server_url", Schema.String, () => "nats://127.0.0.1:4222"),
  user: Schema.optional(Schema.String),
  pass: Schema.optional(Schema.Redacted(Schema.String)),
  token: Schema.optional(Schema.Redacted(Schema.String)),
  credsFile: Schema.optional(Schema.String).pipe(Schema.fromKey("creds_file")),
  tls: Schema.optional(Schema.Union(Schema.Boolean, TlsConfig)),
  /**
   * extension: where the generated credential is kept (mode 0600) when none of user/pass, token and
   * creds_file is set; null: `<state_dir>/nats-credentials.json`.
   */
  credentialsFile: key("credentials_file", Schema.NullOr(Schema.String), () => null),
  /** extension: a nats-server config file the embedded server runs with instead of the generated one. */
  serverConfig: key("server_config", Schema.NullOr(Schema.String), () => null),
  /** extension (issue 14): the embedded server as a member of a NATS cluster; null: a lone server. */
  cluster: key("cluster", Schema.NullOr(NatsClusterConfig), () => null)
})

export const DiscoveryConfig = Schema.Struct({
  heartbeatIntervalMs: key("heartbeat_interval_ms", PositiveMillis, () => 5_000),
  offlineTimeoutMs: key("offline_timeout_ms", PositiveMillis, () => 15_000),
  healthCheckIntervalMs: key("health_check_interval_ms", PositiveMillis, () => 5_000),
  pruneAfterMs: key("prune_after_ms", PositiveMillis, () => 3_600_000),
  /** extension: registrations of new worker ids are refused while the registry holds this many. */
  maxWorkers: key("max_workers", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 1000),
  /** extension: models of one registration beyond this many are dropped (with a warning). */
  maxModelsPerWorker: key("max_models_per_worker", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 1000)
})

export const BalancingStrategy = Schema.Literal("smart", "round_robin", "least_loaded")
export type BalancingStrategy = typeof BalancingStrategy.Type

/**
 * extension (issue 16): cache-aware routing. The controller remembers, per worker, the prompts it
 * sent there (as chains of hashed blocks of `block_tokens` words) and, with strategy `smart`,
 * prefers the worker holding the longest prefix of a new request's prompt, between the memory fit
 * and the least-load steps. See src/controller/prefix-affinity.ts.
 */
export const AffinityConfig = Schema.Struct({
  /** Off: no index, no affinity metrics, `smart` balances as before. Only `smart` routes by it. */
  enabled: key("enabled", Schema.Boolean, () => true),
  /** A shorter shared prefix (in words, ~tokens) is no reason to prefer a worker. */
  minPrefixTokens: key("min_prefix_tokens", Count, () => 64),
  /** Affinity yields when its worker has more than this many requests in flight above the least loaded one. */
  maxImbalance: key("max_imbalance", Count, () => 2),
  /** Words per hashed block. */
  blockTokens: key("block_tokens", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 16),
  /** Memory bound: block hashes remembered per worker (least recently used evicted first). */
  maxBlocksPerWorker: key("max_blocks_per_worker", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 8192),
  /** A prompt not seen again for this long is forgotten (the worker's cache has likely dropped it). */
  maxAgeMs: key("max_age_ms", PositiveMillis, () => 600_000)
})
export type AffinityConfig = typeof AffinityConfig.Type

export const LoadBalancingConfig = Schema.Struct({
  strategy: key("strategy", BalancingStrategy, () => "smart" as const),
  affinity: key("affinity", AffinityConfig, () => Schema.decodeSync(AffinityConfig)({}))
})

export const SyntheticEngineConfig = Schema.Struct({
  tokensPerSecond: key("tokens_per_second", Schema.Number.pipe(Schema.nonNegative()), () => 50),
  firstTokenMs: key("first_token_ms", Millis, () => 50),
  /**
   * extension (issue 16): prefill speed. The first token comes later by the prompt's uncached
   * words / this rate (0: prefill is free). See src/worker/engines/prefill-cache.ts.
   */
  prefillTokensPerSecond: key("prefill_tokens_per_second", Schema.Number.pipe(Schema.nonNegative()), () => 0),
  /** extension (issue 16): prompts the engine's prefix cache holds (mlx_lm.server's --prompt-cache-size). */
  promptCacheSize: key("prompt_cache_size", Count, () => 10),
  /** extension: the longest natural answer, in tokens (answers are 32..this long; raise it to test long streams). */
  maxAnswerTokens: key("max_answer_tokens", Schema.Number.pipe(Schema.int(), Schema.greaterThanOrEqualTo(32)), () => 256)
})

export const OpenAiEngineConfig = Schema.Struct({
  baseUrl: key("base_url", Schema.String, () => "http://127.0.0.1:8000/v1"),
  /** extension: bearer key for the upstream server. */
  apiKey: Schema.optional(Schema.Redacted(Schema.String)).pipe(Schema.fromKey("api_key")),
  /** extension: model name sent upstream; default: the cluster's model name. */
  model: Schema.optional(Schema.String),
  /**
   * extension (issue 13): the upstream continues a final assistant message (vLLM and SGLang with
   * `continue_final_message`, llama.cpp's server by default), so this worker may take over a chat
   * stream whose worker was lost. Off by default: OpenAI's own API and servers that do not would
   * answer with a new turn instead, and the client would get a garbled answer.
   */
  continueChat: key("continue_chat", Schema.Boolean, () => false),
  /**
   * extension (issue 12): what the upstream server honours beyond plain generation
   * (src/domain/features.ts); requests that need anything else never reach this worker.
   */
  features: key("features", Schema.Array(FeatureName), () => DEFAULT_OPENAI_FEATURES)
})

export const MlxLmEngineConfig = Schema.Struct({
  python: key("python", Schema.String, () => "python3"),
  basePort: key("base_port", Port, () => 9100),
  /** extension: how long a starting `mlx_lm.server` may take to answer. */
  startupTimeoutMs: key("startup_timeout_ms", PositiveMillis, () => 180_000),
  /** extension: the module run as `python -m MODULE` (tests point it at a fake server). */
  module: key("module", Schema.String, () => "mlx_lm.server")
})

export const EngineConfig = Schema.Struct({
  type: key("type", Schema.Literal("synthetic", "openai", "mlx-lm"), () => "synthetic" as const),
  synthetic: key("synthetic", SyntheticEngineConfig, () => Schema.decodeSync(SyntheticEngineConfig)({})),
  openai: key("openai", OpenAiEngineConfig, () => Schema.decodeSync(OpenAiEngineConfig)({})),
  mlxLm: key("mlx_lm", MlxLmEngineConfig, () => Schema.decodeSync(MlxLmEngineConfig)({}))
})

export const WorkerConfig = Schema.Struct({
  /** Letters, digits, `-` and `_`, at most 128 characters (a WorkerId). */
  id: key("id", Schema.NullOr(WorkerIdString), () => null),
  modelDir: key("model_dir", Schema.String, () => "./models"),
  /** extension: a Hugging Face hub cache (`models--ORG--NAME/snapshots/REV`) scanned as well. */
  hfCacheDir: key("hf_cache_dir", Schema.NullOr(Schema.String), () => null),
  /** extension: how often the model folders are scanned again. */
  rescanIntervalMs: key("rescan_interval_ms", PositiveMillis, () => 60_000),
  maxConcurrent: key("max_concurrent", Schema.Number.pipe(Schema.int(), Schema.positive()), () => 4),
  drainTimeoutMs: key("drain_timeout_ms", Millis, () => 30_000),
  /** extension: longest one request may run on this worker. */
  requestTimeoutMs: key("request_timeout_ms", PositiveMillis, () => 300_000),
  /**
   * extension (issue 14): how often the worker asks each controller that owns one of its running
   * requests whether it is alive (`controller.{id}.probe`); a gone controller's requests are stopped.
   */
  controllerProbeIntervalMs: key("controller_probe_interval_ms", PositiveMillis, () => 1_000),
  tags: key("tags", Schema.Array(Schema.String), () => []),
  priority: key("priority", Schema.Finite, () => 0),
  engine: key("engine", EngineConfig, () => Schema.decodeSync(EngineConfig)({})),
  hardware: key("hardware", HardwareOverrides, () => ({})),
  /**
   * extension (issue 12): per model name, the features its engine honours for that model, instead
   * of the engine's own list (a vision model behind the openai engine: add `multimodal`).
   */
  modelFeatures: key("model_features", Schema.Record({ key: Schema.String, value: Schema.Array(FeatureName) }), () => ({}))
})

export const LogLevelName = Schema.Literal("debug", "info", "warning", "error")

/** extension: `pretty` is one logfmt-like line per event; `json` one JSON object per line. */
export const LogFormat = Schema.Literal("pretty", "json")
export type LogFormat = typeof LogFormat.Type

export const MetricsConfig = Schema.Struct({
  /** extension: Effect's runtime fiber metrics (`effect_fiber_*`): they cost CPU on every fiber, so off unless asked for. */
  runtime: key("runtime", Schema.Boolean, () => false)
})

export const ClusterConfig = Schema.Struct({
  mode: key("mode", ClusterMode, () => "both" as const),
  /** extension: minimum log level. */
  logLevel: key("log_level", LogLevelName, () => "info" as const),
  /**
   * extension: the folder this process keeps files in between runs (the generated NATS credential,
   * pid files of its children); relative to the working directory.
   */
  stateDir: key("state_dir", Schema.String, () => ".cluster"),
  /** extension: how log lines are written. */
  logFormat: key("log_format", LogFormat, () => "pretty" as const),
  /** extension: what `/metrics` reports beyond the cluster's own metrics. */
  metrics: key("metrics", MetricsConfig, () => Schema.decodeSync(MetricsConfig)({})),
  controller: key("controller", ControllerConfig, () => Schema.decodeSync(ControllerConfig)({})),
  nats: key("nats", NatsConfig, () => Schema.decodeSync(NatsConfig)({})),
  discovery: key("discovery", DiscoveryConfig, () => Schema.decodeSync(DiscoveryConfig)({})),
  loadBalancing: key("load_balancing", LoadBalancingConfig, () => Schema.decodeSync(LoadBalancingConfig)({})),
  worker: key("worker", WorkerConfig, () => Schema.decodeSync(WorkerConfig)({}))
})
export type ClusterConfig = typeof ClusterConfig.Type

/** The whole file: everything sits under `cluster:`. */
export const ConfigFile = Schema.Struct({
  cluster: key("cluster", ClusterConfig, () => Schema.decodeSync(ClusterConfig)({}))
})
export type ConfigFile = typeof ConfigFile.Type

/** The defaults of docs/contract.md §2, as one decoded value. */
export const defaultClusterConfig = (): ClusterConfig => Schema.decodeSync(ClusterConfig)({})

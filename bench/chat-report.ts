/**
 * The chat scenario's results (issue 16): per strategy, TTFT, the workers' prefix-cache hit rate,
 * the controller's affinity counters and the requests per worker; the issue's targets; the
 * markdown printed at the end of a run.
 */
import { percentile } from "./load.js"

export interface TurnSample {
  readonly conversation: number
  /** 0-based. */
  readonly turn: number
  /** Words of the prompt sent (messages' content). */
  readonly promptWords: number
  readonly ttftMs: number | undefined
  readonly durationMs: number
  /** Undefined: success. */
  readonly error: string | undefined
}

/** What one worker reported in its last heartbeat. */
export interface WorkerReport {
  readonly workerId: string
  /** Requests it accepted (`metrics.requests.total`). */
  readonly requests: number
  readonly promptCache:
    | { readonly hits: number; readonly misses: number; readonly cachedTokens: number; readonly promptTokens: number }
    | undefined
}

/** The controller's `mlx_cluster_affinity_*` counters (undefined: not exported). */
export interface AffinityCounters {
  readonly hits: number
  readonly displaced: number
  readonly misses: number
  readonly cachedTokens: number
  readonly uncachedTokens: number
}

export interface StrategyResult {
  readonly strategy: string
  /** Time the client spent running this strategy's conversations. */
  readonly wallMs: number
  /** The machine's 1-minute load average, mean over the strategy's waves (CPU contention adds to TTFT). */
  readonly loadAverage: number
  readonly requests: number
  readonly errors: number
  readonly errorKinds: Record<string, number>
  readonly ttftP50Ms: number
  readonly ttftP90Ms: number
  readonly ttftP99Ms: number
  readonly ttftMeanMs: number
  /** TTFT p50 per turn (index 0 = turn 1). */
  readonly ttftP50ByTurnMs: ReadonlyArray<number>
  readonly workers: ReadonlyArray<WorkerReport>
  /** Prompt tokens served from the workers' caches / all prompt tokens. */
  readonly cacheTokenHitRate: number
  /** Requests that found any of their prompt cached / all requests. */
  readonly cacheRequestHitRate: number
  /** Mean modelled prefill per request: uncached prompt tokens / prefill rate (independent of CPU load). */
  readonly prefillMeanMs: number
  readonly affinity: AffinityCounters | undefined
  /** Busiest worker's requests / idlest worker's. */
  readonly loadMaxOverMin: number
}

export interface TargetCheck {
  readonly name: string
  readonly met: boolean
  readonly detail: string
}

const sum = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0)

export const summariseStrategy = (
  strategy: string,
  samples: ReadonlyArray<TurnSample>,
  workers: ReadonlyArray<WorkerReport>,
  affinity: AffinityCounters | undefined,
  wallMs: number,
  loadAverage: number,
  prefillTokensPerSecond: number
): StrategyResult => {
  const ok = samples.filter((s) => s.error === undefined)
  const ttfts = ok.flatMap((s) => (s.ttftMs === undefined ? [] : [s.ttftMs])).sort((a, b) => a - b)
  const turns = Math.max(0, ...samples.map((s) => s.turn + 1))
  const byTurn = Array.from({ length: turns }, (_, t) =>
    percentile(
      ok.flatMap((s) => (s.turn === t && s.ttftMs !== undefined ? [s.ttftMs] : [])).sort((a, b) => a - b),
      50
    )
  )
  const errorKinds: Record<string, number> = {}
  for (const s of samples) if (s.error !== undefined) errorKinds[s.error] = (errorKinds[s.error] ?? 0) + 1
  const caches = workers.flatMap((w) => (w.promptCache === undefined ? [] : [w.promptCache]))
  const promptTokens = sum(caches.map((c) => c.promptTokens))
  const lookups = sum(caches.map((c) => c.hits + c.misses))
  const loads = workers.map((w) => w.requests)
  return {
    strategy,
    wallMs,
    loadAverage,
    requests: samples.length,
    errors: samples.length - ok.length,
    errorKinds,
    ttftP50Ms: percentile(ttfts, 50),
    ttftP90Ms: percentile(ttfts, 90),
    ttftP99Ms: percentile(ttfts, 99),
    ttftMeanMs: ttfts.length === 0 ? Number.NaN : sum(ttfts) / ttfts.length,
    ttftP50ByTurnMs: byTurn,
    workers,
    cacheTokenHitRate: promptTokens === 0 ? Number.NaN : sum(caches.map((c) => c.cachedTokens)) / promptTokens,
    cacheRequestHitRate: lookups === 0 ? Number.NaN : sum(caches.map((c) => c.hits)) / lookups,
    prefillMeanMs:
      lookups === 0 || prefillTokensPerSecond <= 0
        ? Number.NaN
        : (1000 * (promptTokens - sum(caches.map((c) => c.cachedTokens)))) / prefillTokensPerSecond / lookups,
    affinity,
    loadMaxOverMin: loads.length === 0 ? Number.NaN : Math.max(...loads) / Math.min(...loads)
  }
}

/**
 * The counters of `mlx_cluster_affinity_total{result}` and
 * `mlx_cluster_affinity_prompt_tokens_total{cached}` in a Prometheus text exposition.
 */
export const parseAffinityCounters = (text: string): AffinityCounters | undefined => {
  const value = (name: string, label: string, labelValue: string): number | undefined => {
    for (const line of text.split("\n")) {
      if (!line.startsWith(name) || line.startsWith("#")) continue
      const match = /^([a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)/.exec(line)
      if (match === null || !/^(?:_total)*$/.test((match[1] ?? "").slice(name.length))) continue
      if (!(match[2] ?? "").split(",").includes(`${label}="${labelValue}"`)) continue
      return Number(match[3])
    }
    return undefined
  }
  const hits = value("mlx_cluster_affinity", "result", "hit")
  const displaced = value("mlx_cluster_affinity", "result", "displaced")
  const misses = value("mlx_cluster_affinity", "result", "miss")
  if (hits === undefined && displaced === undefined && misses === undefined) return undefined
  return {
    hits: hits ?? 0,
    displaced: displaced ?? 0,
    misses: misses ?? 0,
    cachedTokens: value("mlx_cluster_affinity_prompt_tokens", "cached", "true") ?? 0,
    uncachedTokens: value("mlx_cluster_affinity_prompt_tokens", "cached", "false") ?? 0
  }
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : "n/a")
const ms = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} ms` : "n/a")
const times = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : "n/a")

export const checkChatTargets = (results: ReadonlyArray<StrategyResult>): ReadonlyArray<TargetCheck> => {
  const smart = results.find((r) => r.strategy === "smart")
  const roundRobin = results.find((r) => r.strategy === "round_robin")
  if (smart === undefined) return [{ name: "smart was run", met: false, detail: "not in --strategies" }]
  return [
    {
      name: "smart: prefix-cache hit rate ≥ 90 % (prompt tokens served from the workers' caches)",
      met: smart.cacheTokenHitRate >= 0.9,
      detail: pct(smart.cacheTokenHitRate)
    },
    {
      name: "smart: TTFT p50 at least 3× lower than round_robin's",
      met: roundRobin !== undefined && smart.ttftP50Ms * 3 <= roundRobin.ttftP50Ms,
      detail:
        roundRobin === undefined
          ? "round_robin not run"
          : `${ms(smart.ttftP50Ms)} vs ${ms(roundRobin.ttftP50Ms)}: ${times(roundRobin.ttftP50Ms / smart.ttftP50Ms)} lower`
    },
    {
      name: "smart: max/min requests per worker ≤ 1.25",
      met: smart.loadMaxOverMin <= 1.25,
      detail: `${times(smart.loadMaxOverMin)} (${smart.workers.map((w) => w.requests).join(" / ")})`
    },
    {
      name: "no failed requests",
      met: results.every((r) => r.errors === 0),
      detail: results.map((r) => `${r.strategy}: ${r.errors}`).join(", ")
    }
  ]
}

export interface ChatRunInfo {
  readonly startedAt: string
  readonly wallSeconds: number
  readonly machine: string
  readonly workload: string
  readonly cluster: string
}

export const formatChatResults = (info: ChatRunInfo, results: ReadonlyArray<StrategyResult>, targets: ReadonlyArray<TargetCheck>): string => {
  const out: Array<string> = [
    `## Chat scenario: cache-aware routing (${info.startedAt})`,
    "",
    `Workload: ${info.workload}`,
    `Cluster: ${info.cluster}`,
    `Machine: ${info.machine}. The whole run took ${info.wallSeconds.toFixed(0)} s.`,
    "",
    "| strategy | requests (errors) | load avg | TTFT p50 | TTFT p90 | TTFT p99 | modelled prefill (mean) | rest of TTFT (mean) | prefix-cache hit rate (tokens) | requests with a cache hit | " +
      "controller: predicted hit rate (tokens) | controller: hit / displaced / miss | requests per worker | max/min |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  ]
  for (const r of results) {
    const a = r.affinity
    const predicted = a === undefined ? "n/a" : pct(a.cachedTokens / (a.cachedTokens + a.uncachedTokens))
    const outcomes = a === undefined ? "n/a" : `${a.hits} / ${a.displaced} / ${a.misses}`
    out.push(
      `| ${r.strategy} | ${r.requests} (${r.errors}) | ${r.loadAverage.toFixed(1)} | ${ms(r.ttftP50Ms)} | ${ms(r.ttftP90Ms)} | ${ms(r.ttftP99Ms)} | ${ms(r.prefillMeanMs)} | ${ms(r.ttftMeanMs - r.prefillMeanMs)} | ${pct(r.cacheTokenHitRate)} | ` +
        `${pct(r.cacheRequestHitRate)} | ${predicted} | ${outcomes} | ${r.workers.map((w) => w.requests).join(" / ")} | ${times(r.loadMaxOverMin)} |`
    )
  }
  const turns = Math.max(0, ...results.map((r) => r.ttftP50ByTurnMs.length))
  out.push(
    "",
    "TTFT p50 by turn:",
    "",
    `| strategy | ${Array.from({ length: turns }, (_, t) => `turn ${t + 1}`).join(" | ")} |`,
    `|---|${Array.from({ length: turns }, () => "---").join("|")}|`,
    ...results.map((r) => `| ${r.strategy} | ${r.ttftP50ByTurnMs.map(ms).join(" | ")} |`),
    "",
    "Targets (issue 16):",
    "",
    ...targets.map((t) => `- ${t.met ? "✅" : "❌"} ${t.name}: ${t.detail}`),
    "",
    "Notes: the prefix-cache hit rate is the workers' own count (heartbeat `promptCache`): prompt words found in the " +
      "synthetic engine's prompt cache over all prompt words, the rate vLLM and SGLang report. \"Requests with a cache hit\" " +
      "counts requests that reused any cached block, which a shared system prompt makes easy. The controller's columns are its " +
      "own estimate (counted for every strategy): the prompt words its index says the chosen worker held, and per dispatch hit " +
      "(the chosen worker held ≥ min_prefix_tokens, and no worker more), displaced (another worker held a longer prefix) or miss. " +
      "Modelled prefill: the workers' uncached prompt words / prefill_tokens_per_second, per request: the part of TTFT " +
      "the routing decides, free of CPU noise; the rest of TTFT (mean TTFT − mean modelled prefill) is the 10 ms first-token " +
      "delay plus the time spent in the client, the controller, NATS and the worker, which no strategy changes. " +
      "TTFT is measured by the client, from sending the request to the first content chunk; it includes the relay's own " +
      "time, which grows with the machine's load (load avg: the 1-minute load average after each of the strategy's waves, mean; this " +
      "machine's cores are shared with the load generator, the cluster and anything else running), while the modelled " +
      "prefill does not."
  )
  for (const r of results) {
    if (r.errors > 0) {
      out.push("", `Errors (${r.strategy}): ${Object.entries(r.errorKinds).map(([k, n]) => `${n}× ${k}`).join("; ")}`)
    }
  }
  return out.join("\n")
}

import { Schema } from "effect"
import { ClusterStatus } from "../domain/cluster.js"
import { GenerateEvent } from "../domain/rpc.js"
import { WorkerInfo } from "../domain/worker.js"

/**
 * Pure text rendering for `scripts/cluster.ts`: every function takes values (and "now" where an
 * age is shown) and returns the text to print, so the output is tested without a terminal.
 */

/** Rows whose columns are padded to their widest cell, separated by two spaces, without trailing blanks. */
export const renderColumns = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const columns = Math.max(0, ...rows.map((r) => r.length))
  const widths = Array.from({ length: columns }, (_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    widths
      .map((w, i) => (cells[i] ?? "").padEnd(w))
      .join("  ")
      .trimEnd()
  return rows.map(line).join("\n")
}

/** A header line, then the rows, in aligned columns. */
export const renderTable = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  renderColumns([headers, ...rows])

/** `950 ms`, `12.5 s`, `3m 05s`, `2h 04m`, `3d 01h`. */
export const formatDuration = (ms: number): string => {
  if (!Number.isFinite(ms) || ms < 0) return "-"
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
  const totalSeconds = Math.floor(ms / 1000)
  const pad = (n: number) => String(n).padStart(2, "0")
  const minutes = Math.floor(totalSeconds / 60)
  if (minutes < 60) return `${minutes}m ${pad(totalSeconds % 60)}s`
  const hours = Math.floor(minutes / 60)
  if (hours < 24) return `${hours}h ${pad(minutes % 60)}m`
  return `${Math.floor(hours / 24)}d ${pad(hours % 24)}h`
}

/** How long ago `then` was, seen at `now`: `4.2 s ago`, `just now` under a second. */
export const formatAge = (then: number, now: number): string => {
  const age = now - then
  if (age < 1000) return "just now"
  return `${formatDuration(age)} ago`
}

/** A fraction 0..1 as a percentage with one decimal: `0.9833` → `98.3 %`. */
export const formatPercent = (fraction: number): string => `${(fraction * 100).toFixed(1)} %`

const formatNumber = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1))

/** `GET /api/cluster/status` as a small two-column table. */
export const formatStatus = (status: ClusterStatus): string => {
  const { controller: c, workers: w, requests: r } = status
  return renderColumns([
    ["controller", `${c.state}, version ${c.version}, mode ${c.mode}, uptime ${formatDuration(c.uptime)}`],
    ["workers", `${w.total} total, ${w.online} online, ${w.offline} offline`],
    // Every request is in exactly one of the four, so the parts add up to the total.
    [
      "requests",
      `${r.total} total = ${r.active} active + ${r.succeeded} succeeded + ${r.failed} failed + ${r.cancelled} cancelled, success rate ${formatPercent(r.successRate)}`
    ]
  ])
}

/** At most `max` model names, then `+N more`. */
export const formatModels = (models: ReadonlyArray<string>, max = 2): string => {
  if (models.length === 0) return "-"
  const shown = models.slice(0, max).join(", ")
  return models.length > max ? `${shown} +${models.length - max} more` : shown
}

export const WORKER_COLUMNS = [
  "ID",
  "STATUS",
  "HOST",
  "CHIP",
  "GPU GB",
  "MODELS",
  "TAGS",
  "SLOTS",
  "SERVED",
  "LAST HEARTBEAT"
] as const

/**
 * `active/max` slots. An offline worker shows `-` for active: what it last reported is stale
 * (it may have died mid-request), and it runs nothing for this cluster now.
 */
export const formatSlots = (w: WorkerInfo): string => {
  const active = w.status === "online" ? String(w.metrics?.requests.active ?? 0) : "-"
  return `${active}/${w.capabilities.maxConcurrent}`
}

/** One row per worker, in the order given; `now` (epoch ms) for the heartbeat ages. */
export const formatWorkers = (workers: ReadonlyArray<WorkerInfo>, now: number): string => {
  if (workers.length === 0) return "no workers registered"
  const rows = workers.map((w) => [
    w.workerId,
    w.statusReason === undefined || w.status === "online" ? w.status : `${w.status} (${w.statusReason})`,
    w.hostname,
    w.hardware.chip ?? "-",
    formatNumber(w.hardware.gpuMemoryGB),
    formatModels(w.skills.availableModels),
    w.tags === undefined || w.tags.length === 0 ? "-" : w.tags.join(","),
    formatSlots(w),
    w.metrics === undefined ? "-" : String(w.metrics.requests.total),
    formatAge(w.lastHeartbeat, now)
  ])
  return renderTable(WORKER_COLUMNS, rows)
}

type Done = Extract<GenerateEvent, { type: "done" }>

/** The line after a generated text: tokens, time, rate, finish reason and worker. */
export const formatGenerateSummary = (done: Done, elapsedMs: number): string => {
  const tokens = done.usage.completionTokens
  const rate = elapsedMs > 0 ? `, ${(tokens / (elapsedMs / 1000)).toFixed(1)} tokens/s` : ""
  return `[${tokens} tokens in ${formatDuration(elapsedMs)}${rate}, finish ${done.finishReason}, prompt ${done.usage.promptTokens} tokens, worker ${done.workerId}]`
}

// --json: the RPC results as their wire JSON, for scripts and `jq`.

/** `status --json`: the `ClusterStatus` as the controller sends it. */
export const statusJson = (status: ClusterStatus): string => JSON.stringify(Schema.encodeSync(ClusterStatus)(status), null, 2)

/** `workers --json`: the array of `WorkerInfo`. */
export const workersJson = (workers: ReadonlyArray<WorkerInfo>): string =>
  JSON.stringify(Schema.encodeSync(Schema.Array(WorkerInfo))(workers), null, 2)

/** `generate --json`: one event per line (NDJSON), printed as it arrives. */
export const eventJson = (event: GenerateEvent): string => JSON.stringify(Schema.encodeSync(GenerateEvent)(event))

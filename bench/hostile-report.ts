/**
 * The hostile scenario's results (issue 9, "locked doors"): what a flood of registrations, a
 * registration claiming 300,000 models and JSON nested 100,000 deep cost the cluster; the pure
 * helpers the scenario builds its payloads and reads its answers with; the markdown printed at the
 * end of a run.
 */

/** `depth` arrays inside each other: `[[[…]]]`, as JSON text. */
export const nestedArray = (depth: number): string => "[".repeat(depth) + "]".repeat(depth)

/**
 * `value` as JSON text with each placeholder string (a key of `raw`, which must occur as a whole
 * JSON string value) replaced by the raw JSON text it maps to: how a payload with one hostile field
 * is written without building (and stringifying) a 100,000-deep value.
 */
export const jsonWithRaw = (value: unknown, raw: Readonly<Record<string, string>>): string => {
  let text = JSON.stringify(value)
  for (const [placeholder, json] of Object.entries(raw)) {
    const quoted = JSON.stringify(placeholder)
    if (!text.includes(quoted)) throw new Error(`placeholder ${placeholder} is not in the value`)
    // A function, so that `$` in the replacement is taken literally.
    text = text.replace(quoted, () => json)
  }
  return text
}

/** At most `max` characters, newlines flattened, `…` when cut. */
export const firstChars = (text: string, max = 120): string => {
  const flat = text.replace(/\s*\n\s*/g, " ")
  return flat.length > max ? `${flat.slice(0, max)}…` : flat
}

/** What an error answer says: its code and message, wherever the door puts them. */
export interface ErrorSummary {
  readonly code: string | undefined
  readonly message: string | undefined
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value)
const str = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined)
const describe = (value: unknown): string => (typeof value === "string" ? value : JSON.stringify(value) ?? String(value))

/** An Effect `Cause` as encoded by @effect/rpc (`Fail`, `Die`, `Sequential`, …): its first failure. */
const fromCause = (cause: unknown): ErrorSummary | undefined => {
  for (let c: unknown = cause, steps = 0; isRecord(c) && steps < 64; steps++) {
    switch (c["_tag"]) {
      case "Fail": {
        const error = c["error"]
        return isRecord(error)
          ? { code: str(error["code"]) ?? str(error["_tag"]), message: str(error["message"]) ?? describe(error) }
          : { code: "Fail", message: describe(error) }
      }
      case "Die": {
        const defect = c["defect"]
        return { code: "defect", message: isRecord(defect) ? (str(defect["message"]) ?? describe(defect)) : describe(defect) }
      }
      case "Interrupt":
        return { code: "interrupted", message: undefined }
      case "Sequential":
      case "Parallel":
        c = isRecord(c["left"]) && c["left"]["_tag"] !== "Empty" ? c["left"] : c["right"]
        continue
      default:
        return undefined
    }
  }
  return undefined
}

/** One JSON value's error: OpenAI's `{ error: { code, message } }`, a WebSocket error frame, an RPC `Exit`/`Defect`. */
const fromValue = (value: unknown): ErrorSummary | undefined => {
  if (!isRecord(value)) return undefined
  const error = value["error"]
  if (isRecord(error)) return { code: str(error["code"]) ?? str(error["type"]), message: str(error["message"]) }
  if (value["type"] === "error" && isRecord(value["data"])) return { code: str(value["data"]["code"]), message: str(value["data"]["message"]) }
  if (value["_tag"] === "Exit" && isRecord(value["exit"]) && value["exit"]["_tag"] === "Failure") return fromCause(value["exit"]["cause"])
  if (value["_tag"] === "Defect") {
    const defect = value["defect"]
    return { code: "defect", message: isRecord(defect) ? (str(defect["message"]) ?? describe(defect)) : describe(defect) }
  }
  return undefined
}

/** The error an answer's body carries (JSON, or NDJSON lines: the first line that is an error); nothing readable: undefined fields. */
export const errorOfBody = (text: string): ErrorSummary => {
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      continue
    }
    const found = fromValue(value)
    if (found !== undefined) return found
  }
  return { code: undefined, message: undefined }
}

/** What the guarded decoder says about a value nested too deep (src/domain/decode.ts). */
export const TOO_DEEP = "nested deeper than 64 levels"

/** One hostile payload sent to one door. */
export interface DeepRow {
  readonly surface: string
  /** The field that held the nesting. */
  readonly field: string
  /** What came back: `HTTP 400`, `error frame`, `dropped (logged)`, `no answer within …`. */
  readonly outcome: string
  /** The HTTP status, for the HTTP doors. */
  readonly status: number | undefined
  readonly code: string | undefined
  /** The error message (or the log line's reason), first 120 characters. */
  readonly message: string | undefined
  /** The node answered /health (or took the next bus message) afterwards, and its process still runs. */
  readonly survived: boolean
  /** From sending to the answer (the bus: to the node's log line). */
  readonly ms: number
  /** Not a hostile payload but a shallower one, for contrast: not judged. */
  readonly contrast?: boolean
}

/** The row is what issue 9 asks for: a 400 (or the frame / the dropped message) naming the depth, and the node alive. */
export const deepRowOk = (row: DeepRow): boolean =>
  row.contrast === true ||
  row.survived && (row.status === undefined || row.status === 400) && (row.message ?? "").includes(TOO_DEEP)

/** A timed answer of one HTTP request. */
export interface Timed {
  readonly ms: number
  readonly status: number
  readonly bytes: number
  /** Entries listed (`data` of /v1/models, the array of /api/cluster/workers), when it is a listing. */
  readonly count?: number
  readonly error?: string
}

export interface FloodResult {
  readonly maxWorkers: number
  readonly registrations: number
  /** Publishing them all, and a flush (the server has them). */
  readonly publishMs: number
  /** From the first publish until the controller had applied the last one (a re-registration sent after them all). */
  readonly processedMs: number | undefined
  /** Flood ids in the registry afterwards. */
  readonly floodListed: number
  readonly workersTotal: number
  /** GET /v1/models sent right after the last publish, while the controller works through them. */
  readonly modelsDuring: Timed
  readonly modelsAfter: Timed
  readonly workersAfter: Timed
  readonly statusAfter: Timed
  readonly metricsAfter: Timed
  readonly chat: { readonly ttftMs: number | undefined; readonly totalMs: number; readonly error: string | undefined }
  readonly rssBeforeMiB: number
  readonly rssAfterMiB: number
  /** Over the flood window (publish to processed), sampled every 250 ms. */
  readonly peakRssMiB: number
  readonly controllerCpuPercent: number
  /** Warning and error lines the controller printed from the flood on. */
  readonly controllerWarnings: number
  /** The registry's size about once a second from the first publish. */
  readonly progress: ReadonlyArray<{ readonly ms: number; readonly workers: number }>
  /** The slowest of the small GETs (`/api/cluster/workers/{id}`) polled every 50 ms while the controller worked. */
  readonly slowestPollMs: number
  /** The size at which it stopped growing after the controller's bus connection dropped (the marker never came). */
  readonly stalledAt: number | undefined
  /** When the controller logged these, in ms from the first publish (its log lines' timestamps). */
  readonly events: {
    readonly natsDisconnectedMs: number | undefined
    readonly natsReconnectedMs: number | undefined
    readonly realWorkerOfflineMs: number | undefined
    readonly firstFloodOfflineMs: number | undefined
    /** Flood workers the controller marked offline (no heartbeat) until the measurements ended. */
    readonly floodOffline: number
  }
  /** The real worker's status right after the measurements. */
  readonly realWorkerStatus: string
  /** The flood's workers going offline (no heartbeats) at `offline_timeout_ms`; undefined when not waited for. */
  readonly offline:
    | { readonly afterMs: number | undefined; readonly modelsAfter: Timed; readonly chat: { readonly ttftMs: number | undefined; readonly totalMs: number; readonly error: string | undefined } }
    | undefined
}

export interface UnavailableAnswer {
  readonly status: number
  readonly bytes: number
  readonly code: string | undefined
  readonly message: string | undefined
}

export interface ModelsResult {
  readonly claimed: number
  readonly registrationBytes: number
  /** The bus the scenario ran on, and the default one (1 MiB) that refuses such a registration. */
  readonly busMaxPayload: number
  readonly processedMs: number | undefined
  /** Models the registry kept for the worker. */
  readonly kept: number | undefined
  readonly modelsBefore: Timed
  readonly modelsAfter: Timed
  /** A chat completion for a model only an offline worker served: `503 no_skilled_worker`, which lists the served models. */
  readonly unavailableBefore: UnavailableAnswer
  readonly unavailableAfter: UnavailableAnswer
  /** The controller's warning about the registration (its length: what it costs the log). */
  readonly logLine: string | undefined
  readonly rssBeforeMiB: number
  readonly rssAfterMiB: number
}

export interface HostileInfo {
  readonly startedAt: string
  readonly wallSeconds: number
  readonly machine: string
  readonly command: string
}

export interface HostileResults {
  readonly info: HostileInfo
  readonly flood: ReadonlyArray<FloodResult>
  readonly models: ModelsResult | undefined
  readonly deep: ReadonlyArray<DeepRow>
  readonly depth: number
  readonly notes: ReadonlyArray<string>
}

/** A markdown table; `|` and newlines inside cells escaped. */
export const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>, align?: ReadonlyArray<"l" | "r">): Array<string> => {
  const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\s*\n\s*/g, " ")
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map(cell).join(" | ")} |`
  return [line(header), `|${header.map((_, i) => (align?.[i] === "r" ? "---:" : "---")).join("|")}|`, ...rows.map(line)]
}

const ms = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "n/a" : x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${x.toFixed(x < 10 ? 1 : 0)} ms`)
const mib = (x: number) => (Number.isFinite(x) ? `${x.toFixed(0)} MiB` : "n/a")
export const bytes = (n: number): string =>
  !Number.isFinite(n) ? "n/a" : n >= 1_048_576 ? `${(n / 1_048_576).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`
const timed = (t: Timed) =>
  t.error !== undefined ? `failed: ${firstChars(t.error, 60)} (${ms(t.ms)})` : `${ms(t.ms)} (HTTP ${t.status}, ${bytes(t.bytes)}${t.count === undefined ? "" : `, ${t.count} listed`})`
const chat = (c: FloodResult["chat"]) => (c.error === undefined ? `TTFT ${ms(c.ttftMs)}, done in ${ms(c.totalMs)}` : `failed: ${firstChars(c.error, 80)}`)

/** The registry's size at the last sample taken by `atMs` ("—" before the first); once done, the final size. */
const sizeAt = (f: FloodResult, atMs: number): string => {
  if (f.processedMs !== undefined && f.processedMs <= atMs) return `${f.workersTotal} (done)`
  let size: number | undefined
  for (const p of f.progress) if (p.ms <= atMs) size = p.workers
  return size === undefined ? "—" : String(size)
}

const floodTable = (flood: ReadonlyArray<FloodResult>): Array<string> => {
  const header = ["", ...flood.map((f) => `max_workers ${f.maxWorkers}${f.maxWorkers === 1000 ? " (default)" : ""}`)]
  const row = (name: string, value: (f: FloodResult) => string) => [name, ...flood.map(value)]
  const rows = [
    row("registrations published (distinct ids)", (f) => String(f.registrations)),
    row("publish + flush", (f) => ms(f.publishMs)),
    row("controller done with them (from the first publish)", (f) =>
      f.processedMs !== undefined ? ms(f.processedMs) : f.stalledAt !== undefined ? `never: stalled at ${f.stalledAt} workers` : "not within the timeout"
    ),
    row("registry size after 1 s / 5 s / 10 s / 15 s", (f) => [1, 5, 10, 15].map((s) => sizeAt(f, s * 1000)).join(" / ")),
    row("slowest GET /api/cluster/workers/{id} while it worked", (f) => ms(f.slowestPollMs)),
    row("flood ids listed (workers in the registry)", (f) => `${f.floodListed} (${f.workersTotal})`),
    row("GET /v1/models sent right after the last publish", (f) => timed(f.modelsDuring)),
    row("GET /v1/models after", (f) => timed(f.modelsAfter)),
    row("GET /api/cluster/workers after", (f) => timed(f.workersAfter)),
    row("GET /api/cluster/status after", (f) => timed(f.statusAfter)),
    row("GET /metrics after", (f) => timed(f.metricsAfter)),
    row("streamed chat completion (real worker) after", (f) => chat(f.chat)),
    row("controller RSS before → after (peak during)", (f) => `${mib(f.rssBeforeMiB)} → ${mib(f.rssAfterMiB)} (${mib(f.peakRssMiB)})`),
    row("controller CPU while processing (% of one core)", (f) => `${f.controllerCpuPercent.toFixed(0)} %`),
    row("controller warning/error lines printed", (f) => String(f.controllerWarnings)),
    row("controller's NATS connection dropped (log)", (f) =>
      f.events.natsDisconnectedMs === undefined
        ? "no"
        : `at ${ms(f.events.natsDisconnectedMs)}${f.events.natsReconnectedMs === undefined ? "" : `, back at ${ms(f.events.natsReconnectedMs)}`}`
    ),
    row("flood workers marked offline (no heartbeat) by then", (f) =>
      f.events.floodOffline === 0 ? "none" : `${f.events.floodOffline}, the first at ${ms(f.events.firstFloodOfflineMs)}`
    ),
    row("real worker marked offline", (f) =>
      `${f.events.realWorkerOfflineMs === undefined ? "no" : `at ${ms(f.events.realWorkerOfflineMs)}`} (${f.realWorkerStatus} after the measurements)`
    )
  ]
  if (flood.some((f) => f.offline !== undefined)) {
    rows.push(
      row("flood ids all offline after (no heartbeats)", (f) => (f.offline === undefined ? "not waited" : f.offline.afterMs === undefined ? "not within the timeout" : ms(f.offline.afterMs))),
      row("GET /v1/models once they are offline", (f) => (f.offline === undefined ? "—" : timed(f.offline.modelsAfter))),
      row("streamed chat completion once they are offline", (f) => (f.offline === undefined ? "—" : chat(f.offline.chat)))
    )
  }
  return markdownTable(header, rows)
}

const unavailable = (u: UnavailableAnswer) =>
  `HTTP ${u.status} ${u.code ?? "?"}, ${bytes(u.bytes)}: "${firstChars(u.message ?? "", 120)}"`

const modelsTable = (m: ModelsResult): Array<string> =>
  markdownTable(
    ["", "value"],
    [
      ["models claimed by one registration", String(m.claimed)],
      ["registration size on the bus", `${bytes(m.registrationBytes)} (this run's nats-server: max_payload ${bytes(m.busMaxPayload)}; a default one, 1 MiB, refuses it)`],
      ["controller done with it (publish to listed)", m.processedMs === undefined ? "not within the timeout" : ms(m.processedMs)],
      ["models kept for the worker", m.kept === undefined ? "n/a" : String(m.kept)],
      ["GET /v1/models before", timed(m.modelsBefore)],
      ["GET /v1/models after", timed(m.modelsAfter)],
      ["503 body before", unavailable(m.unavailableBefore)],
      ["503 body after", unavailable(m.unavailableAfter)],
      ["controller's warning line", m.logLine === undefined ? "none seen" : `${m.logLine.length} chars: ${firstChars(m.logLine, 200)}`],
      ["controller RSS before → after", `${mib(m.rssBeforeMiB)} → ${mib(m.rssAfterMiB)}`]
    ]
  )

const deepTable = (rows: ReadonlyArray<DeepRow>): Array<string> =>
  markdownTable(
    ["surface", "field", "answer", "node survived", "error.code", "message (first 120 chars)", "message ends", "time", "ok"],
    rows.map((r) => [
      r.surface,
      r.field,
      r.outcome,
      r.survived ? "yes" : "NO",
      r.code ?? "—",
      r.message === undefined ? "—" : firstChars(r.message, 120),
      r.message === undefined || r.message.length <= 120 ? "" : `…${r.message.slice(-40)}`,
      ms(r.ms),
      r.contrast === true ? "(contrast)" : deepRowOk(r) ? "✅" : "❌"
    ])
  )

export const formatHostileResults = (r: HostileResults): string => {
  const out: Array<string> = [
    `## Hostile scenario: issue 9's figures (${r.info.startedAt})`,
    "",
    `Command: \`${r.info.command}\`. Machine: ${r.info.machine}. The whole run took ${r.info.wallSeconds.toFixed(0)} s.`,
    ""
  ]
  if (r.flood.length > 0) {
    out.push(
      `### ${r.flood[0]?.registrations ?? 0} registrations with distinct worker ids`,
      "",
      "Each cluster: its own nats-server, a controller and one synthetic worker (the real CLI); the registrations are valid " +
        "`WorkerRegistration`s (encoded with the project's codec) on `worker.register`, each claiming its own model, published as fast as " +
        "the client can, then one re-registration of the first id as a marker: the controller is done when the marker is applied.",
      "",
      ...floodTable(r.flood),
      ""
    )
  }
  if (r.models !== undefined) {
    out.push(`### One registration claiming ${r.models.claimed} models (discovery.max_models_per_worker: default 1000)`, "", ...modelsTable(r.models), "")
  }
  if (r.deep.length > 0) {
    const judged = r.deep.filter((row) => row.contrast !== true)
    const failed = judged.filter((row) => !deepRowOk(row)).length
    out.push(
      `### JSON nested ${r.depth} deep, at every door`,
      "",
      `Expected: a 400 (a WebSocket error frame; on the bus, a dropped message) naming the field, "${TOO_DEEP}", and the node alive. ` +
        `${failed === 0 ? "Every row is as expected." : `${failed} of ${judged.length} rows are not.`}`,
      "",
      ...deepTable(r.deep),
      ""
    )
  }
  for (const note of r.notes) out.push(`Note: ${note}`)
  return out.join("\n")
}

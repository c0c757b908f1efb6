/**
 * The hostile scenario of the benchmark (issue 9, "locked doors"): `npm run bench -- --scenario hostile`.
 *
 *   npm run bench -- --scenario hostile [--registrations 10000] [--big-max-workers 20000]
 *        [--models 300000] [--depth 100000] [--parts flood,models,deep] [--wait-offline]
 *        [--timeout 120] [--log-level warning]
 *
 * Measures the two figures issue 9's done-when asks for, against real processes (the CLI, as in the
 * other scenarios):
 *
 * 1. flood: per `discovery.max_workers` (the default 1000, then `--big-max-workers`), its own
 *    cluster (nats-server, controller, one synthetic worker); `--registrations` valid
 *    `WorkerRegistration`s with distinct ids, encoded with the project's codec, published on
 *    `worker.register` as fast as the client can, then a re-registration of the first id (a known
 *    id, accepted even past `max_workers`) as a marker: the controller has processed the flood when
 *    `/api/cluster/workers/{first}` shows the marker (one fiber consumes `worker.register` in
 *    order). On the way, the registry's size once a second and the controller's log lines that
 *    matter (its NATS connection dropped, the real worker or flood workers marked offline); when
 *    the connection dropped and the size then stays put for 10 s, the rest of the flood is lost and
 *    the wait ends. Then the latency of `GET /v1/models`, `/api/cluster/workers`,
 *    `/api/cluster/status`, `/metrics` and of one streamed chat completion served by the real
 *    worker, and the controller's RSS and CPU. `--wait-offline` also waits for the flood's workers
 *    to go offline (they never heartbeat: `offline_timeout_ms`, 15 s) and measures again.
 * 2. models: one registration claiming `--models` models (`discovery.max_models_per_worker`, 1000 by
 *    default, keeps the first 1000): the size of `/v1/models` and of a 503 body (`no_skilled_worker`,
 *    which lists the served models) before and after. Such a registration is several MB, more than a
 *    default nats-server carries (`max_payload` 1 MiB), so this cluster's nats-server runs with
 *    `max_payload: 8 MiB` (`startCluster`'s `natsMaxPayload`).
 * 3. deep (same cluster, first): JSON nested `--depth` deep inside `model`, `messages` (`prompt` on
 *    /v1/completions) and `max_tokens` at every door: `POST /v1/chat/completions`,
 *    `POST /v1/completions`, a `/ws` inference frame, a `/rpc` Generate call, and on the bus
 *    `worker.register`, `worker.heartbeat` (read by the controller) and `worker.{id}.inference`
 *    (read by the worker). Per row: the answer, `error.code`, the message, the time, and whether
 *    the node survived (its process runs and it answers `/health`; on the bus, it still applies the
 *    next message of that subscription).
 *
 * The bench's clusters run an open nats-server (no credentials), as in cluster.ts. Prints markdown
 * tables and saves JSON under bench/results/.
 */
import { Either } from "effect"
import { Agent } from "node:http"
import { cpus, loadavg } from "node:os"
import { connect, type NatsConnection } from "nats"
import WebSocket from "ws"
import { WorkerId } from "../src/domain/ids.js"
import { Subjects } from "../src/domain/subjects.js"
import { WorkerDeregistration, WorkerHeartbeat, WorkerRegistration } from "../src/domain/worker.js"
import { encoderFor } from "../src/nats/codec.js"
import { type Child } from "./child.js"
import { parseFlags, UsageError } from "./cli.js"
import { type Cluster, type ClusterSettings, MODEL, sleep, startCluster, stopCluster } from "./cluster.js"
import {
  type DeepRow,
  errorOfBody,
  firstChars,
  type FloodResult,
  formatHostileResults,
  type HostileResults,
  jsonWithRaw,
  type ModelsResult,
  nestedArray,
  type Timed,
  type UnavailableAnswer
} from "./hostile-report.js"
import { chatBody, streamOnce } from "./load.js"
import { CostMeter, sampleProcesses } from "./process-cost.js"
import { type BenchRun, progress } from "./run.js"

export const HOSTILE_USAGE = `Usage: npm run bench -- --scenario hostile [options]
  --registrations N    registrations with distinct worker ids per flood     default 10000
  --big-max-workers N  discovery.max_workers of the second flood's cluster  default 20000
  --models N           models claimed by one registration                   default 300000
  --depth N            nesting of the hostile JSON                          default 100000
  --parts LIST         which parts to run, of flood,models,deep             default flood,models,deep
  --wait-offline       also wait for the flood's workers to go offline (15 s each) and measure again
  --timeout S          longest wait for the controller, per step            default 120
  --log-level L        the clusters' log_level                              default warning
  -h, --help           this text
`

const PARTS = ["flood", "models", "deep"] as const
type Part = (typeof PARTS)[number]

interface HostileOptions {
  readonly registrations: number
  readonly bigMaxWorkers: number
  readonly models: number
  readonly depth: number
  readonly parts: ReadonlyArray<Part>
  readonly waitOffline: boolean
  readonly timeoutMs: number
  readonly logLevel: string
}

const parseHostileOptions = (argv: ReadonlyArray<string>): HostileOptions | "help" => {
  const flags = parseFlags(argv, {
    values: ["registrations", "big-max-workers", "models", "depth", "parts", "timeout", "log-level"],
    booleans: ["wait-offline"]
  })
  if (flags === "help") return "help"
  const parts = flags.list("parts", PARTS.join(","))
  const unknown = parts.filter((p) => !(PARTS as ReadonlyArray<string>).includes(p))
  if (unknown.length > 0) throw new UsageError(`--parts: unknown ${unknown.join(", ")}; expected some of ${PARTS.join(", ")}`)
  return {
    registrations: flags.number("registrations", 10_000, 1, true),
    bigMaxWorkers: flags.number("big-max-workers", 20_000, 1, true),
    models: flags.number("models", 300_000, 1, true),
    depth: flags.number("depth", 100_000, 1, true),
    parts: parts as ReadonlyArray<Part>,
    waitOffline: flags.boolean("wait-offline"),
    timeoutMs: flags.number("timeout", 120, 1) * 1000,
    logLevel: flags.logLevel()
  }
}

const log = progress("hostile")

const DEFAULT_MAX_WORKERS = 1000
/** The second cluster's bus: large enough for a registration claiming 300,000 models. */
const BIG_MAX_PAYLOAD = 8 * 1024 * 1024
const WORKER_ID = "hostile-w1"

const settings = (o: HostileOptions, discovery?: Record<string, unknown>): ClusterSettings => ({
  logLevel: o.logLevel,
  maxConcurrent: 8,
  synthetic: { tokens_per_second: 0, first_token_ms: 0 },
  ...(discovery === undefined ? {} : { extra: { discovery } })
})

// ---------------------------------------------------------------------------------------------
// HTTP, the bus, the children

interface Answer {
  readonly ms: number
  readonly status: number
  readonly text: string
  readonly error?: string
}

const send = async (port: number, method: string, path: string, timeoutMs: number, body?: string, contentType = "application/json"): Promise<Answer> => {
  const started = performance.now()
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      ...(body === undefined ? {} : { body, headers: { "content-type": contentType } }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    const text = await res.text()
    return { ms: performance.now() - started, status: res.status, text }
  } catch (error) {
    return { ms: performance.now() - started, status: 0, text: "", error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) }
  }
}

const listed = (text: string): number | undefined => {
  try {
    const value: unknown = JSON.parse(text)
    if (Array.isArray(value)) return value.length
    if (typeof value === "object" && value !== null && "data" in value && Array.isArray(value.data)) return value.data.length
  } catch {
    // not a listing
  }
  return undefined
}

const timedGet = async (port: number, path: string, timeoutMs: number): Promise<Timed> => {
  const a = await send(port, "GET", path, timeoutMs)
  const count = listed(a.text)
  return { ms: a.ms, status: a.status, bytes: Buffer.byteLength(a.text), ...(count === undefined ? {} : { count }), ...(a.error === undefined ? {} : { error: a.error }) }
}

const getJsonOr = async <A>(port: number, path: string): Promise<A | undefined> => {
  const a = await send(port, "GET", path, 10_000)
  if (a.status !== 200) return undefined
  try {
    return JSON.parse(a.text) as A
  } catch {
    return undefined
  }
}

interface StatusBody {
  readonly workers?: { readonly total?: number; readonly online?: number; readonly offline?: number }
}

interface WorkerBody {
  readonly hostname?: string
  readonly status?: string
  readonly metrics?: { readonly cpuUsage?: number }
  readonly skills?: { readonly availableModels?: ReadonlyArray<string> }
}

/** Polls `check` every `everyMs` until it is true: the ms it took from `since`, or undefined after `timeoutMs`. */
const until = async (check: () => Promise<boolean>, since: number, timeoutMs: number, everyMs = 50): Promise<number | undefined> => {
  const deadline = performance.now() + timeoutMs
  while (performance.now() < deadline) {
    if (await check()) return performance.now() - since
    await sleep(everyMs)
  }
  return undefined
}

const rssOf = async (child: Child): Promise<number> => (await sampleProcesses([child.pid])).get(child.pid)?.rssMiB ?? Number.NaN

/** Warning and error lines the child printed so far. */
const warningsOf = (child: Child): number => child.lines().reduce((n, l) => n + (l.level === "other" ? 0 : l.count), 0)

const alive = async (child: Child, port: number): Promise<boolean> => child.isRunning() && (await send(port, "GET", "/health", 10_000)).status === 200

const streamedChat = async (port: number, timeoutMs: number): Promise<FloodResult["chat"]> => {
  const agent = new Agent({ keepAlive: false })
  try {
    const r = await streamOnce({ agent, target: { name: "controller", host: "127.0.0.1", port }, body: chatBody(MODEL, 16), timeoutMs })
    return { ttftMs: r.ttftMs, totalMs: r.endedAt - r.startedAt, error: r.error }
  } finally {
    agent.destroy()
  }
}

const encodeRegistration = encoderFor(WorkerRegistration)
const encodeDeregistration = encoderFor(WorkerDeregistration)
const encodeHeartbeat = encoderFor(WorkerHeartbeat)
const orThrow = (result: Either.Either<Uint8Array, string>): Uint8Array =>
  Either.getOrThrowWith(result, (reason) => new Error(`the project's encoder refused a bench message: ${reason}`))

/** A valid registration, as a real (small) worker would send it. */
const registration = (id: string, models: ReadonlyArray<string>, hostname = "hostile-bench"): WorkerRegistration => {
  const now = Date.now()
  return {
    workerId: WorkerId.make(id),
    hostname,
    ip: "192.0.2.1",
    port: 0,
    hardware: { platform: "darwin", arch: "arm64", chip: "Apple M2", cpuCores: 8, gpuMemoryGB: 16, totalMemoryGB: 24 },
    capabilities: { maxConcurrent: 4, supportsStreaming: true, engine: "synthetic" },
    skills: { availableModels: models, modelPaths: {}, modelSizes: {}, totalModelSize: 0, lastScanned: now },
    timestamp: now
  }
}

const connectBus = (cluster: Cluster): Promise<NatsConnection> => connect({ servers: cluster.natsUrl, name: "bench hostile" })

/** When (ms after `since`, by the line's own timestamp) the child first printed a line matching each pattern, and how often. */
interface LogTap {
  readonly first: (name: string) => number | undefined
  readonly count: (name: string) => number
  readonly stop: () => void
}

const tapLines = (child: Child, since: () => number, patterns: Readonly<Record<string, RegExp>>): LogTap => {
  const first = new Map<string, number>()
  const counts = new Map<string, number>()
  let partial = ""
  // Wall-clock time of `since` (performance.now() based) is recovered from the offset between the two clocks.
  const wallOffset = Date.now() - performance.now()
  const onData = (chunk: Buffer) => {
    const lines = (partial + chunk.toString("utf8")).split("\n")
    partial = lines.pop() ?? ""
    for (const line of lines) {
      for (const [name, pattern] of Object.entries(patterns)) {
        if (!pattern.test(line)) continue
        counts.set(name, (counts.get(name) ?? 0) + 1)
        if (first.has(name)) continue
        const stamp = /^(\d{4}-\d\d-\d\dT\S+Z)\s/.exec(line)?.[1]
        const wall = stamp === undefined ? Date.now() : Date.parse(stamp)
        first.set(name, wall - wallOffset - since())
      }
    }
  }
  child.process.stdout?.on("data", onData)
  child.process.stderr?.on("data", onData)
  return {
    first: (name) => first.get(name),
    count: (name) => counts.get(name) ?? 0,
    stop: () => {
      child.process.stdout?.off("data", onData)
      child.process.stderr?.off("data", onData)
    }
  }
}

/** Registry size unchanged this long after the controller's bus connection dropped: the rest of the flood is lost. */
const STALL_MS = 10_000

// ---------------------------------------------------------------------------------------------
// 1. The flood

const floodId = (i: number) => `flood-${String(i).padStart(6, "0")}`

const runFlood = async (run: BenchRun, o: HostileOptions, maxWorkers: number, dir: string): Promise<FloodResult> => {
  const discovery = maxWorkers === DEFAULT_MAX_WORKERS ? undefined : { max_workers: maxWorkers }
  const cluster = await startCluster(run, { name: `flood${maxWorkers}`, workers: 1, workerIdPrefix: "hostile-w", settings: settings(o, discovery), readyTimeoutMs: 90_000, dir })
  log(`flood, max_workers ${maxWorkers}${discovery === undefined ? " (default)" : ""}: cluster ready on :${cluster.port}`)
  const nc = await connectBus(cluster)
  let started = performance.now()
  const tap = tapLines(cluster.controller, () => started, {
    natsDisconnected: /NATS disconnected/,
    natsReconnected: /NATS reconnected/,
    realWorkerOffline: new RegExp(`worker ${WORKER_ID} offline`),
    floodOffline: /worker flood-\d+ offline/
  })
  try {
    const port = cluster.port
    // Encoded before the clock starts: what is timed is the bus and the controller, not this client's encoder.
    const payloads = Array.from({ length: o.registrations }, (_, k) => orThrow(encodeRegistration(registration(floodId(k + 1), [`flood/model-${k + 1}`]))))
    const marker = orThrow(encodeRegistration(registration(floodId(1), ["flood/model-1"], "marker")))
    const rssBeforeMiB = await rssOf(cluster.controller)
    const warningsBefore = warningsOf(cluster.controller)
    const meter = new CostMeter(new Map([["controller", cluster.controller.pid]]))
    await meter.start()
    started = performance.now()
    for (const payload of payloads) nc.publish(Subjects.register, payload)
    nc.publish(Subjects.register, marker)
    await nc.flush()
    const publishMs = performance.now() - started
    log(`published ${o.registrations} registrations and the marker in ${publishMs.toFixed(0)} ms`)
    const modelsDuringPromise = timedGet(port, "/v1/models", o.timeoutMs)
    // Until the marker is applied; the registry's size once a second on the way. Given up when the
    // size stopped moving after the controller lost its bus connection (what was in flight is gone).
    const progress: Array<{ readonly ms: number; readonly workers: number }> = []
    let processedMs: number | undefined
    let stalledAt: number | undefined
    let lastChange = performance.now()
    let slowestPollMs = 0
    while (performance.now() - started < o.timeoutMs) {
      const asked = performance.now()
      const first = await getJsonOr<WorkerBody>(port, `/api/cluster/workers/${floodId(1)}`)
      slowestPollMs = Math.max(slowestPollMs, performance.now() - asked)
      if (first?.hostname === "marker") {
        processedMs = performance.now() - started
        break
      }
      const now = performance.now()
      if (progress.length === 0 || now - started - (progress[progress.length - 1]?.ms ?? 0) >= 1_000) {
        const workers = (await getJsonOr<StatusBody>(port, "/api/cluster/status"))?.workers?.total ?? Number.NaN
        if (workers !== progress[progress.length - 1]?.workers) lastChange = now
        progress.push({ ms: now - started, workers })
        if (tap.first("natsDisconnected") !== undefined && now - lastChange > STALL_MS) {
          stalledAt = workers
          break
        }
      }
      await sleep(50)
    }
    const cost = await meter.stop()
    const modelsDuring = await modelsDuringPromise
    log(
      `controller ${processedMs === undefined ? `not done (${stalledAt === undefined ? "timeout" : `stalled at ${stalledAt} workers`})` : `done after ${processedMs.toFixed(0)} ms`}; ` +
        `GET /v1/models meanwhile: ${modelsDuring.ms.toFixed(0)} ms` +
        (tap.first("natsDisconnected") === undefined ? "" : `; its NATS connection dropped at ${((tap.first("natsDisconnected") ?? 0) / 1000).toFixed(1)} s`)
    )
    const statusAfter = await timedGet(port, "/api/cluster/status", o.timeoutMs)
    const modelsAfter = await timedGet(port, "/v1/models", o.timeoutMs)
    const workersAfter = await timedGet(port, "/api/cluster/workers", o.timeoutMs)
    const metricsAfter = await timedGet(port, "/metrics", o.timeoutMs)
    const chat = await streamedChat(port, o.timeoutMs)
    const rssAfterMiB = await rssOf(cluster.controller)
    const status = await getJsonOr<StatusBody>(port, "/api/cluster/status")
    const workersTotal = status?.workers?.total ?? Number.NaN
    const realWorker = await getJsonOr<WorkerBody>(port, `/api/cluster/workers/${WORKER_ID}`)
    const floodListed = workersTotal - 1
    let offline: FloodResult["offline"]
    if (o.waitOffline) {
      log("waiting for the flood's workers to go offline (no heartbeats)")
      const afterMs = await until(
        async () => ((await getJsonOr<StatusBody>(port, "/api/cluster/status"))?.workers?.offline ?? 0) >= floodListed,
        started,
        o.timeoutMs,
        250
      )
      offline = { afterMs, modelsAfter: await timedGet(port, "/v1/models", o.timeoutMs), chat: await streamedChat(port, o.timeoutMs) }
    }
    return {
      maxWorkers,
      registrations: o.registrations,
      publishMs,
      processedMs,
      floodListed,
      workersTotal,
      modelsDuring,
      modelsAfter,
      workersAfter,
      statusAfter,
      metricsAfter,
      chat,
      rssBeforeMiB,
      rssAfterMiB,
      peakRssMiB: cost.perProcess["controller"]?.peakRssMiB ?? Number.NaN,
      controllerCpuPercent: cost.perProcess["controller"]?.cpuPercent ?? Number.NaN,
      controllerWarnings: warningsOf(cluster.controller) - warningsBefore,
      progress,
      slowestPollMs,
      stalledAt,
      events: {
        natsDisconnectedMs: tap.first("natsDisconnected"),
        natsReconnectedMs: tap.first("natsReconnected"),
        realWorkerOfflineMs: tap.first("realWorkerOffline"),
        firstFloodOfflineMs: tap.first("floodOffline"),
        floodOffline: tap.count("floodOffline")
      },
      realWorkerStatus: realWorker?.status ?? "absent",
      offline
    }
  } finally {
    tap.stop()
    await nc.close()
    await stopCluster(cluster)
  }
}

// ---------------------------------------------------------------------------------------------
// 2. One registration claiming many models

const unavailableAnswer = async (port: number, model: string, timeoutMs: number): Promise<UnavailableAnswer> => {
  const a = await send(port, "POST", "/v1/chat/completions", timeoutMs, JSON.stringify({ model, max_tokens: 4, messages: [{ role: "user", content: "hi" }] }))
  const e = errorOfBody(a.text)
  return { status: a.status, bytes: Buffer.byteLength(a.text), code: e.code, message: e.message ?? a.error }
}

const runModels = async (cluster: Cluster, nc: NatsConnection, o: HostileOptions, notes: Array<string>): Promise<ModelsResult> => {
  const port = cluster.port
  const waitWorker = (id: string, check: (w: WorkerBody) => boolean, since = performance.now()) =>
    until(async () => {
      const w = await getJsonOr<WorkerBody>(port, `/api/cluster/workers/${id}`)
      return w !== undefined && check(w)
    }, since, o.timeoutMs)
  // A model only an offline worker served: the 503 that lists the served models.
  nc.publish(Subjects.register, orThrow(encodeRegistration(registration("ghost", ["ghost/model"]))))
  await nc.flush()
  await waitWorker("ghost", () => true)
  nc.publish(Subjects.deregister, orThrow(encodeDeregistration({ workerId: WorkerId.make("ghost"), timestamp: Date.now() })))
  await nc.flush()
  await waitWorker("ghost", (w) => w.status === "offline")
  const modelsBefore = await timedGet(port, "/v1/models", o.timeoutMs)
  const unavailableBefore = await unavailableAnswer(port, "ghost/model", o.timeoutMs)
  const rssBeforeMiB = await rssOf(cluster.controller)

  const models = Array.from({ length: o.models }, (_, i) => `hostile/model-${i}`)
  const payload = orThrow(encodeRegistration(registration("many-models", models)))
  const maxPayload = nc.info?.max_payload ?? 1_048_576
  log(`one registration claiming ${o.models} models: ${payload.length} bytes (the bus carries ${maxPayload})`)
  let processedMs: number | undefined
  let kept: number | undefined
  if (payload.length > maxPayload) {
    notes.push(`the ${o.models}-model registration (${payload.length} bytes) is over this bus's max_payload (${maxPayload}): not sent`)
  } else {
    const started = performance.now()
    nc.publish(Subjects.register, payload)
    await nc.flush()
    processedMs = await waitWorker("many-models", () => true, started)
    kept = (await getJsonOr<WorkerBody>(port, "/api/cluster/workers/many-models"))?.skills?.availableModels?.length
  }
  const modelsAfter = await timedGet(port, "/v1/models", o.timeoutMs)
  const unavailableAfter = await unavailableAnswer(port, "ghost/model", o.timeoutMs)
  const rssAfterMiB = await rssOf(cluster.controller)
  await sleep(200)
  const logLine = /[^\n]*worker many-models worker\.register adjusted[^\n]*/.exec(cluster.controller.output())?.[0]
  return {
    claimed: o.models,
    registrationBytes: payload.length,
    busMaxPayload: maxPayload,
    processedMs,
    kept,
    modelsBefore,
    modelsAfter,
    unavailableBefore,
    unavailableAfter,
    logLine,
    rssBeforeMiB,
    rssAfterMiB
  }
}

// ---------------------------------------------------------------------------------------------
// 3. JSON nested deep, at every door

const DEEP = "__HOSTILE_DEEP__"

/** Sends each payload on one WebSocket, one after the other: the rows, and whether the socket still serves a valid request. */
const wsRows = async (cluster: Cluster, frames: ReadonlyArray<{ readonly field: string; readonly text: string }>, timeoutMs: number): Promise<Array<DeepRow>> => {
  const socket = new WebSocket(`ws://127.0.0.1:${cluster.port}/ws`)
  const waiters = new Map<string, (frame: Record<string, unknown>, raw: string) => void>()
  socket.on("message", (data, isBinary) => {
    if (isBinary) return
    const raw = data.toString()
    try {
      const frame = JSON.parse(raw) as Record<string, unknown>
      if (frame["type"] !== "error" && frame["type"] !== "done") return
      const id = typeof frame["id"] === "string" ? frame["id"] : "null"
      waiters.get(id)?.(frame, raw)
    } catch {
      // not ours to judge here
    }
  })
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve())
    socket.once("error", reject)
  })
  const ask = (id: string, text: string) =>
    new Promise<{ readonly ms: number; readonly raw: string | undefined; readonly type: string | undefined }>((resolve) => {
      const started = performance.now()
      const timer = setTimeout(() => {
        waiters.delete(id)
        resolve({ ms: performance.now() - started, raw: undefined, type: undefined })
      }, timeoutMs)
      const answered = (frame: Record<string, unknown>, raw: string) => {
        clearTimeout(timer)
        waiters.delete(id)
        resolve({ ms: performance.now() - started, raw, type: typeof frame["type"] === "string" ? frame["type"] : undefined })
      }
      waiters.set(id, answered)
      // A frame so broken that the server reads no id is answered with id null.
      waiters.set("null", answered)
      socket.send(text)
    })
  const rows: Array<DeepRow> = []
  try {
    for (const { field, text } of frames) {
      const answer = await ask(`deep-${field}`, text)
      const e = answer.raw === undefined ? { code: undefined, message: undefined } : errorOfBody(answer.raw)
      rows.push({
        surface: "/ws inference frame",
        field,
        outcome: answer.type === undefined ? `no frame within ${timeoutMs / 1000} s` : `${answer.type} frame`,
        status: undefined,
        code: e.code,
        message: e.message,
        survived: socket.readyState === WebSocket.OPEN && (await alive(cluster.controller, cluster.port)),
        ms: answer.ms
      })
    }
    // The socket itself still serves.
    const valid = await ask("after-deep", JSON.stringify({ type: "inference", id: "after-deep", data: { model: MODEL, prompt: "hi", maxTokens: 4 } }))
    if (valid.type !== "done") {
      for (const [i, row] of rows.entries()) rows[i] = { ...row, survived: false, outcome: `${row.outcome}; a valid request after it: ${valid.type ?? "no answer"}` }
    }
  } finally {
    socket.terminate()
  }
  return rows
}

/** The text after `dropped a message on SUBJECT: ` in a log line. */
const droppedReason = (output: string, subject: string): string | undefined => {
  const escaped = subject.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  return new RegExp(`dropped a message on ${escaped}: ([^\\n]*)`).exec(output)?.[1]
}

const busRow = async (
  node: Child,
  port: number,
  nc: NatsConnection,
  subject: string,
  field: string,
  text: string,
  stillReads: () => Promise<number | undefined>,
  timeoutMs: number
): Promise<DeepRow> => {
  const started = performance.now()
  nc.publish(subject, new TextEncoder().encode(text))
  await nc.flush()
  let logged = true
  try {
    await node.waitFor(new RegExp(`dropped a message on ${subject.replace(/\./g, "\\.")}`), timeoutMs)
  } catch {
    logged = false
  }
  const ms = performance.now() - started
  const next = await stillReads()
  const reason = droppedReason(node.output(), subject)
  return {
    surface: `NATS ${subject} (${node.name.replace(/^hostile-/, "")})`,
    field,
    outcome: logged ? "dropped (logged)" : `no log line within ${timeoutMs / 1000} s`,
    status: undefined,
    code: undefined,
    message: reason,
    survived: node.isRunning() && next !== undefined && (await alive(node, port)),
    ms
  }
}

/**
 * A request on `worker.{id}.inference`, as a controller sends one (with a reply subject): the
 * worker's refusal, and whether it still serves a streamed chat completion afterwards.
 */
const workerRow = async (cluster: Cluster, nc: NatsConnection, text: string, timeoutMs: number): Promise<DeepRow> => {
  const worker = cluster.workers[0] as Child
  const subject = Subjects.inference(WORKER_ID)
  const started = performance.now()
  let outcome: string
  let code: string | undefined
  let message: string | undefined
  try {
    const reply = await nc.request(subject, new TextEncoder().encode(text), { timeout: timeoutMs })
    const body = JSON.parse(new TextDecoder().decode(reply.data)) as { readonly accepted?: boolean; readonly reason?: string; readonly message?: string }
    outcome = body.accepted === false ? "refusal reply" : `reply ${JSON.stringify(body).slice(0, 60)}`
    code = body.reason
    message = body.message
  } catch (error) {
    outcome = `no reply: ${error instanceof Error ? error.message : String(error)}`
  }
  const ms = performance.now() - started
  const chat = await streamedChat(cluster.port, timeoutMs)
  return {
    surface: `NATS ${subject} (worker)`,
    field: "maxTokens",
    outcome,
    status: undefined,
    code,
    message,
    survived: worker.isRunning() && chat.error === undefined,
    ms
  }
}

const runDeep = async (cluster: Cluster, nc: NatsConnection, o: HostileOptions): Promise<Array<DeepRow>> => {
  const port = cluster.port
  const deep = nestedArray(o.depth)
  const rows: Array<DeepRow> = []
  const http = async (surface: string, path: string, field: string, body: string, contentType?: string, contrast = false) => {
    const a = await send(port, "POST", path, o.timeoutMs, body, contentType)
    const e = errorOfBody(a.text)
    rows.push({
      surface,
      field,
      outcome: a.error !== undefined ? `failed: ${firstChars(a.error, 60)}` : `HTTP ${a.status}`,
      status: a.error === undefined ? a.status : undefined,
      code: e.code,
      message: e.message ?? (a.text === "" ? a.error : firstChars(a.text, 120)),
      survived: await alive(cluster.controller, port),
      ms: a.ms,
      ...(contrast ? { contrast } : {})
    })
  }
  const chatBase = { model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 8 }
  for (const field of ["model", "messages", "max_tokens"] as const) {
    await http("POST /v1/chat/completions", "/v1/chat/completions", field, jsonWithRaw({ ...chatBase, [field]: DEEP }, { [DEEP]: deep }))
  }
  const completionBase = { model: MODEL, prompt: "hi", max_tokens: 8 }
  for (const field of ["model", "prompt", "max_tokens"] as const) {
    await http("POST /v1/completions", "/v1/completions", field, jsonWithRaw({ ...completionBase, [field]: DEEP }, { [DEEP]: deep }))
  }
  const simpleBase = { model: MODEL, messages: [{ role: "user", content: "hi" }], maxTokens: 8 }
  const simpleFields = ["model", "messages", "maxTokens"] as const
  rows.push(
    ...(await wsRows(
      cluster,
      simpleFields.map((field) => ({
        field,
        text: jsonWithRaw({ type: "inference", id: `deep-${field}`, data: { ...simpleBase, [field]: DEEP } }, { [DEEP]: deep })
      })),
      o.timeoutMs
    ))
  )
  for (const field of simpleFields) {
    const request = { _tag: "Request", id: "1", tag: "Generate", payload: { ...simpleBase, [field]: DEEP }, headers: [] }
    await http("POST /rpc (Generate)", "/rpc", field, `${jsonWithRaw(request, { [DEEP]: deep })}\n`, "application/ndjson")
  }
  // For contrast: what /rpc answers a payload only 1,000 deep, and one merely of the wrong type.
  const shallow = { _tag: "Request", id: "1", tag: "Generate", payload: { ...simpleBase, model: DEEP }, headers: [] }
  await http("POST /rpc (Generate)", "/rpc", "model, 1,000 deep", `${jsonWithRaw(shallow, { [DEEP]: nestedArray(1_000) })}\n`, "application/ndjson", true)
  await http("POST /rpc (Generate)", "/rpc", "model: 5", `${jsonWithRaw(shallow, { [DEEP]: "5" })}\n`, "application/ndjson", true)

  // The bus. After each hostile message, a valid one on the same subscription shows that it still reads.
  const canaryId = "canary"
  const registerCanary = async (hostname: string) => {
    const since = performance.now()
    nc.publish(Subjects.register, orThrow(encodeRegistration(registration(canaryId, ["canary/model"], hostname))))
    await nc.flush()
    return until(async () => (await getJsonOr<WorkerBody>(port, `/api/cluster/workers/${canaryId}`))?.hostname === hostname, since, o.timeoutMs)
  }
  await registerCanary("canary-0")
  const reg = registration("deep-register", ["deep/model"])
  rows.push(
    await busRow(cluster.controller, port, nc, Subjects.register, "hostname", jsonWithRaw({ ...reg, hostname: DEEP }, { [DEEP]: deep }), () => registerCanary("canary-1"), o.timeoutMs)
  )
  const heartbeat = (cpuUsage: number): WorkerHeartbeat => ({
    workerId: WorkerId.make(canaryId),
    timestamp: Date.now(),
    metrics: { cpuUsage, memoryUsage: 0.1, requests: { active: 0, total: 0, succeeded: 0, failed: 0 } }
  })
  const heartbeatTaken = async () => {
    const since = performance.now()
    nc.publish(Subjects.heartbeat, orThrow(encodeHeartbeat(heartbeat(0.125))))
    await nc.flush()
    return until(async () => (await getJsonOr<WorkerBody>(port, `/api/cluster/workers/${canaryId}`))?.metrics?.cpuUsage === 0.125, since, o.timeoutMs)
  }
  const hostileHeartbeat = { ...heartbeat(0), metrics: { ...heartbeat(0).metrics, cpuUsage: DEEP } }
  rows.push(
    await busRow(cluster.controller, port, nc, Subjects.heartbeat, "metrics.cpuUsage", jsonWithRaw(hostileHeartbeat, { [DEEP]: deep }), heartbeatTaken, o.timeoutMs)
  )
  rows.push(await workerRow(cluster, nc, jsonWithRaw({ requestId: "deep-inference", model: MODEL, prompt: "hi", maxTokens: DEEP }, { [DEEP]: deep }), o.timeoutMs))
  return rows
}

// ---------------------------------------------------------------------------------------------

/** The hostile scenario, its children and folders owned by `run`. */
export const runHostileScenario = async (run: BenchRun, argv: ReadonlyArray<string>): Promise<void> => {
  const parsed = parseHostileOptions(argv)
  if (parsed === "help") return void process.stdout.write(HOSTILE_USAGE)
  const o = parsed
  const startedAt = new Date()
  const notes: Array<string> = []
  const flood: Array<FloodResult> = []
  let models: ModelsResult | undefined
  let deep: Array<DeepRow> = []
  if (o.parts.includes("flood")) {
    for (const maxWorkers of [DEFAULT_MAX_WORKERS, o.bigMaxWorkers]) {
      if (run.interrupted) throw new Error("interrupted")
      flood.push(await runFlood(run, o, maxWorkers, run.tempDir(`mlx-bench-hostile-${maxWorkers}-`)))
    }
  }
  if (o.parts.includes("models") || o.parts.includes("deep")) {
    const cluster = await startCluster(run, {
      name: "hostile",
      workers: 1,
      workerIdPrefix: "hostile-w",
      settings: settings(o),
      readyTimeoutMs: 90_000,
      dir: run.tempDir("mlx-bench-hostile-"),
      natsMaxPayload: BIG_MAX_PAYLOAD
    })
    log(`models and deep JSON: cluster ready on :${cluster.port} (nats max_payload ${BIG_MAX_PAYLOAD})`)
    const nc = await connectBus(cluster)
    try {
      if (o.parts.includes("deep")) deep = await runDeep(cluster, nc, o)
      if (o.parts.includes("models")) models = await runModels(cluster, nc, o, notes)
    } finally {
      await nc.close()
      await stopCluster(cluster)
    }
  }
  const command = `npm run bench -- --scenario hostile${argv.length === 0 ? "" : ` ${argv.join(" ")}`}`
  const info = {
    startedAt: startedAt.toISOString(),
    wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "unknown"}, Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")} at the end`,
    command
  }
  const results: HostileResults = { info, flood, models, deep, depth: o.depth, notes }
  const file = run.saveResults(`hostile-${info.startedAt}`, { ...results, options: o })
  process.stdout.write(`${formatHostileResults(results)}\n\nResults saved to ${file}\n`)
}

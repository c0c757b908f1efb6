import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { stringify } from "yaml"
import { type CliProcess, spawnCli } from "./cli-process.js"

/**
 * Helpers of the fault tests (test/faults): real CLI processes over a real nats-server, a config
 * file per test, and what a client sees of an SSE stream.
 */

/** Starting `node --import tsx src/main.ts` takes seconds on 2 busy cores. */
export const START_TIMEOUT_MS = 90_000

export const SYNTHETIC_MODEL = "synthetic/demo"

type Plain = { readonly [key: string]: unknown }

const isPlain = (u: unknown): u is Plain => typeof u === "object" && u !== null && !Array.isArray(u)

const merge = (base: Plain, patch: Plain): Plain => {
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(patch)) {
    const previous = out[key]
    out[key] = isPlain(previous) && isPlain(value) ? merge(previous, value) : value
  }
  return out
}

export const isAlive = (pid: number | undefined): boolean => {
  if (pid === undefined) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const hasExited = (cli: CliProcess): boolean => cli.process.exitCode !== null || cli.process.signalCode !== null

export interface Controller {
  readonly cli: CliProcess
  readonly url: string
  readonly pid: number
}

/**
 * The processes and files of one test: `config` writes a YAML file (docs/contract.md §2 keys under
 * `cluster:`, over quiet test defaults: external NATS, controller on 127.0.0.1 and a free port, an
 * empty model folder so that workers serve `synthetic/demo`), `controller`/`worker` spawn the CLI
 * and wait for its ready line, `cleanup` SIGKILLs whatever still runs and removes the files.
 */
export class FaultCluster {
  private readonly processes: Array<CliProcess> = []
  private readonly dirs: Array<string> = []

  constructor(readonly natsUrl: string) {}

  config(cluster: Plain = {}): string {
    const dir = mkdtempSync(join(tmpdir(), "cluster-faults-"))
    this.dirs.push(dir)
    const modelDir = join(dir, "models")
    mkdirSync(modelDir)
    const base: Plain = {
      log_level: "info",
      nats: { mode: "external", server_url: this.natsUrl },
      controller: { bind_address: "127.0.0.1", port: 0 },
      worker: { model_dir: modelDir, engine: { type: "synthetic" } }
    }
    const path = join(dir, "cluster.yaml")
    writeFileSync(path, stringify({ cluster: merge(base, cluster) }))
    return path
  }

  spawn(args: ReadonlyArray<string>): CliProcess {
    const cli = spawnCli(args)
    this.processes.push(cli)
    return cli
  }

  /** A controller CLI (`--mode controller`), resolved once it logged `controller ready on URL`. */
  async controller(configPath: string, extraArgs: ReadonlyArray<string> = []): Promise<Controller> {
    const cli = this.spawn(["--config", configPath, "--mode", "controller", ...extraArgs])
    return this.ready(cli)
  }

  async ready(cli: CliProcess): Promise<Controller> {
    const pattern = /controller ready on (http:\/\/[\w.]+:\d+)/
    await cli.waitFor(pattern, START_TIMEOUT_MS)
    const url = pattern.exec(cli.output())?.[1]
    if (url === undefined || cli.process.pid === undefined) throw new Error(`no controller URL in:\n${cli.output()}`)
    return { cli, url, pid: cli.process.pid }
  }

  /** A worker CLI (`--mode worker --worker-id ID`), resolved once it logged `worker ID registered`. */
  async worker(configPath: string, id: string): Promise<CliProcess> {
    const cli = this.spawn(["--config", configPath, "--mode", "worker", "--worker-id", id])
    await cli.waitFor(new RegExp(`worker ${id} registered`), START_TIMEOUT_MS)
    return cli
  }

  /** Every process this test started that has not exited. */
  alive(): ReadonlyArray<CliProcess> {
    return this.processes.filter((p) => !hasExited(p))
  }

  /** SIGKILLs every process still running, waits for their exits, checks none is left, removes the files. */
  async cleanup(): Promise<void> {
    const running = this.alive()
    for (const cli of running) cli.process.kill("SIGKILL")
    await Promise.all(running.map((cli) => cli.exited))
    const orphans = this.processes.filter((p) => isAlive(p.process.pid))
    this.processes.length = 0
    for (const dir of this.dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
    if (orphans.length > 0) throw new Error(`processes still alive: ${orphans.map((p) => p.process.pid).join(", ")}`)
  }
}

/** Resident memory of a process in KiB (`VmRSS` of /proc/PID/status), undefined once it is gone. */
export const rssKiB = (pid: number): number | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
    return match?.[1] === undefined ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/** Samples `rssKiB(pid)` every `everyMs`; `stop` returns the peak in KiB. */
export const sampleRss = (pid: number, everyMs = 50): { readonly stop: () => number } => {
  let peak = rssKiB(pid) ?? 0
  const timer = setInterval(() => {
    peak = Math.max(peak, rssKiB(pid) ?? 0)
  }, everyMs)
  return {
    stop: () => {
      clearInterval(timer)
      peak = Math.max(peak, rssKiB(pid) ?? 0)
      return peak
    }
  }
}

export interface WireError {
  readonly message: string
  readonly type: string
  readonly code: string | null
}

/** What a client saw of one inference request. */
export interface ClientResult {
  readonly startedAt: number
  /** HTTP status, undefined when the request failed below HTTP (refused, aborted). */
  readonly status: number | undefined
  /** Why fetch or the body read threw (connection refused, abort, timeout). */
  readonly thrown: string | undefined
  /** Content of every token chunk joined (chat `delta.content` or completion `text`). */
  readonly text: string
  /** Chunks that carried text. */
  readonly tokens: number
  /** `data: [DONE]` seen. */
  readonly done: boolean
  /** A `data: {"error":...}` chunk, or the JSON error body of a non-200 answer. */
  readonly error: WireError | undefined
  /** Data events after `[DONE]` or after an error chunk (must stay 0). */
  readonly afterEnd: number
  readonly firstChunkAt: number | undefined
  readonly endedAt: number
  /** The `Retry-After` header of the answer, if any. */
  readonly retryAfter: string | undefined
}

interface SseOptions {
  readonly signal?: AbortSignal
  /** Called after every data event with the result so far; may abort the request. */
  readonly onEvent?: (soFar: ClientResult) => void
}

const errorOf = (u: unknown): WireError | undefined => {
  if (!isPlain(u) || !isPlain(u.error)) return undefined
  const e = u.error
  return {
    message: typeof e.message === "string" ? e.message : "",
    type: typeof e.type === "string" ? e.type : "",
    code: typeof e.code === "string" ? e.code : null
  }
}

const contentOf = (u: unknown): string | undefined => {
  if (!isPlain(u) || !Array.isArray(u.choices)) return undefined
  const choice: unknown = u.choices[0]
  if (!isPlain(choice)) return undefined
  if (isPlain(choice.delta) && typeof choice.delta.content === "string") return choice.delta.content
  if (typeof choice.text === "string") return choice.text
  return undefined
}

/** POSTs `body` to `url` and reads the answer as a client would: SSE chunk by chunk, or one JSON body. */
export const request = async (url: string, body: unknown, options: SseOptions = {}): Promise<ClientResult> => {
  const startedAt = Date.now()
  let status: number | undefined
  let text = ""
  let tokens = 0
  let done = false
  let error: WireError | undefined
  let afterEnd = 0
  let firstChunkAt: number | undefined
  let retryAfter: string | undefined
  const snapshot = (thrown: string | undefined): ClientResult => ({
    startedAt,
    status,
    thrown,
    text,
    tokens,
    done,
    error,
    afterEnd,
    firstChunkAt,
    endedAt: Date.now(),
    retryAfter
  })
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      ...(options.signal === undefined ? {} : { signal: options.signal })
    })
    status = response.status
    retryAfter = response.headers.get("retry-after") ?? undefined
    const contentType = response.headers.get("content-type") ?? ""
    if (!contentType.startsWith("text/event-stream")) {
      const json: unknown = await response.json()
      error = errorOf(json)
      if (isPlain(json) && Array.isArray(json.choices)) {
        const choice: unknown = json.choices[0]
        if (isPlain(choice)) {
          if (isPlain(choice.message) && typeof choice.message.content === "string") text = choice.message.content
          if (typeof choice.text === "string") text = choice.text
        }
        done = true
      }
      return snapshot(undefined)
    }
    if (response.body === null) return snapshot("no body")
    const decoder = new TextDecoder()
    let buffer = ""
    const reader = response.body.getReader()
    while (true) {
      const { value, done: ended } = await reader.read()
      if (ended) break
      buffer += decoder.decode(value, { stream: true })
      let end = buffer.indexOf("\n\n")
      while (end >= 0) {
        const event = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        end = buffer.indexOf("\n\n")
        if (!event.startsWith("data: ")) continue
        const data = event.slice("data: ".length)
        firstChunkAt ??= Date.now()
        if (done || error !== undefined) afterEnd++
        if (data === "[DONE]") {
          done = true
        } else {
          const json: unknown = JSON.parse(data)
          const wire = errorOf(json)
          if (wire !== undefined) error = wire
          const content = contentOf(json)
          if (content !== undefined && content !== "") {
            text += content
            tokens++
          }
        }
        options.onEvent?.(snapshot(undefined))
      }
    }
    return snapshot(buffer.trim() === "" ? undefined : `trailing bytes: ${buffer.slice(0, 200)}`)
  } catch (cause) {
    const inner = cause instanceof Error && cause.cause instanceof Error ? `: ${cause.cause.message}` : ""
    return snapshot(`${cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)}${inner}`)
  }
}

/** A chat completion body for the synthetic model. */
export const chat = (content: string, maxTokens: number, stream = true) => ({
  model: SYNTHETIC_MODEL,
  messages: [{ role: "user", content }],
  max_tokens: maxTokens,
  stream
})

export const getJson = async (url: string): Promise<{ readonly status: number; readonly body: unknown }> => {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) })
  return { status: response.status, body: await response.json() }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `check` every `everyMs` until it returns true; the elapsed ms, or throws after `timeoutMs`. */
export const waitUntil = async (check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 20): Promise<number> => {
  const start = Date.now()
  while (true) {
    let ok = false
    try {
      ok = await check()
    } catch {
      ok = false
    }
    if (ok) return Date.now() - start
    if (Date.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}

export interface WorkerView {
  readonly workerId: string
  readonly status: string
  readonly statusReason?: string
}

export const workers = async (controllerUrl: string): Promise<ReadonlyArray<WorkerView>> => {
  const { body } = await getJson(`${controllerUrl}/api/cluster/workers`)
  return Array.isArray(body) ? (body as ReadonlyArray<WorkerView>) : []
}

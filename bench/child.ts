/**
 * One child process of the benchmark: its output (a tail for error messages, and every line it
 * printed, grouped, for the report), a wait for a line, and a stop. Who owns the children and stops
 * them all is `BenchRun` (run.ts).
 */
import { type ChildProcess, spawn } from "node:child_process"

/** A distinct line (numbers blanked), how often the child printed it, and how bad it reads. */
export interface LoggedLine {
  readonly line: string
  readonly count: number
  readonly level: "error" | "warning" | "other"
}

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** stdout + stderr so far (the last 64 KiB). */
  readonly output: () => string
  /**
   * Every line printed since the start (not only the kept tail), as distinct lines with counts:
   * numbers, ids and timestamps are blanked so that repeats group together; warnings and errors
   * first, then by count. A warning printed a thousand times early in a run is reported, however
   * much was printed after it (issue 11: the bench once hid the controller's warnings by keeping
   * only the tail).
   */
  readonly lines: () => Array<LoggedLine>
  /** Resolves when a line matching `pattern` has been printed; rejects on timeout or exit. */
  readonly waitFor: (pattern: RegExp, timeoutMs: number) => Promise<void>
  readonly exited: Promise<string>
  readonly isRunning: () => boolean
}

const OUTPUT_LIMIT = 65_536
/** Distinct lines kept; past it, new shapes count under one line (a child printing ids we do not blank). */
const DISTINCT_LIMIT = 2_000
const OVERFLOW = "… (other lines: more distinct shapes than the benchmark keeps)"

/** The line with what changes from one occurrence to the next blanked out. */
const lineKey = (line: string): string =>
  line
    .replace(/timestamp=\S+/g, "timestamp=…")
    .replace(/^\S*\d{4}-\d\d-\d\dT\S+\s+/, "")
    .replace(/fiber=#\d+/g, "fiber=#…")
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>")
    .replace(/\d+(\.\d+)?/g, "N")
    .slice(0, 300)

/** Our pretty and JSON log lines, nats-server's and Node's own. */
const levelOf = (key: string): LoggedLine["level"] =>
  /^(FATAL|ERROR)\b|"level":"(fatal|error)"|\[(ERR|FTL)\]/.test(key) ? "error" : /^WARN\b|"level":"warn|\[WRN\]|Warning:/.test(key) ? "warning" : "other"
const RANK = { error: 2, warning: 1, other: 0 } as const

export const spawnChild = (
  name: string,
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env?: NodeJS.ProcessEnv }
): Child => {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] })
  if (child.pid === undefined) throw new Error(`cannot start ${name} (${command})`)
  let output = ""
  let partial = ""
  const counts = new Map<string, number>()
  const waiters = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    const text = chunk.toString("utf8")
    output += text
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT)
    const lines = (partial + text).split("\n")
    partial = lines.pop() ?? ""
    for (const raw of lines) {
      const line = raw.trim()
      // nats-server's own start-up and shutdown notices are not news.
      if (line === "" || line.includes("[INF]")) continue
      const key = lineKey(line)
      const counted = counts.has(key) || counts.size < DISTINCT_LIMIT ? key : OVERFLOW
      counts.set(counted, (counts.get(counted) ?? 0) + 1)
    }
    for (const check of waiters) check()
  }
  child.stdout.on("data", onData)
  child.stderr.on("data", onData)
  let running = true
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => {
      running = false
      resolve(signal ?? `code ${code ?? "?"}`)
    })
  )
  const waitFor = (pattern: RegExp, timeoutMs: number) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!pattern.test(output)) return
        waiters.delete(check)
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`${name}: no output matching ${String(pattern)} within ${timeoutMs} ms; output:\n${tail(output)}`))
      }, timeoutMs)
      waiters.add(check)
      void exited.then((how) => {
        if (!waiters.has(check)) return
        waiters.delete(check)
        clearTimeout(timer)
        reject(new Error(`${name} exited (${how}) before ${String(pattern)}; output:\n${tail(output)}`))
      })
      check()
    })
  return {
    name,
    process: child,
    pid: child.pid,
    output: () => output,
    lines: () =>
      [...counts.entries()]
        .map(([line, count]) => ({ line, count, level: levelOf(line) }))
        .sort((a, b) => RANK[b.level] - RANK[a.level] || b.count - a.count),
    waitFor,
    exited,
    isRunning: () => running
  }
}

const tail = (text: string, lines = 30) => text.trimEnd().split("\n").slice(-lines).join("\n")

/** Throws with the child's output when it is no longer running (`during`: what the bench was doing). */
export const assertRunning = (children: ReadonlyArray<Child>, during: string): void => {
  for (const child of children) {
    if (!child.isRunning()) throw new Error(`${child.name} exited during ${during}; output:\n${child.output()}`)
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export const stopChild = async (child: Child, graceMs = 8_000): Promise<string> => {
  if (!child.isRunning()) return child.exited
  child.process.kill("SIGTERM")
  const timer = setTimeout(() => child.process.kill("SIGKILL"), graceMs)
  const how = await child.exited
  clearTimeout(timer)
  return how
}

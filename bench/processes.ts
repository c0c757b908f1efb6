/**
 * Child processes of the benchmark and their cost, read from /proc.
 *
 * Every child is registered in one list so that the driver can stop them all at the end, on SIGINT
 * and on a harness failure (`stopAll`), and, as a last resort, SIGKILL them synchronously when the
 * driver itself exits (`killAllSync`).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { readFileSync } from "node:fs"

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** stdout + stderr so far (the last 64 KiB). */
  readonly output: () => string
  /**
   * Every line printed since the start (not only the kept tail), as distinct lines with counts:
   * numbers, ids and timestamps are blanked so that repeats group together. A warning printed a
   * thousand times early in a run is reported, however much was printed after it.
   */
  readonly lines: () => Array<{ readonly line: string; readonly count: number }>
  /** Resolves when a line matching `pattern` has been printed; rejects on timeout or exit. */
  readonly waitFor: (pattern: RegExp, timeoutMs: number) => Promise<void>
  readonly exited: Promise<string>
  readonly isRunning: () => boolean
}

const children: Array<Child> = []

const OUTPUT_LIMIT = 65_536

/** The line with what changes from one occurrence to the next blanked out. */
const lineKey = (line: string): string =>
  line
    .replace(/timestamp=\S+/g, "timestamp=…")
    .replace(/^\S*\d{4}-\d\d-\d\dT\S+\s+/, "")
    .replace(/fiber=#\d+/g, "fiber=#…")
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, "<uuid>")
    .replace(/\d+(\.\d+)?/g, "N")
    .slice(0, 300)

export const spawnChild = (
  name: string,
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly env?: NodeJS.ProcessEnv }
): Child => {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"]
  })
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
      counts.set(key, (counts.get(key) ?? 0) + 1)
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
  const handle: Child = {
    name,
    process: child,
    pid: child.pid,
    output: () => output,
    lines: () => [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([line, count]) => ({ line, count })),
    waitFor,
    exited,
    isRunning: () => running
  }
  children.push(handle)
  return handle
}

const tail = (text: string, lines = 30) => text.trimEnd().split("\n").slice(-lines).join("\n")

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export const stopChild = async (child: Child, graceMs = 8_000): Promise<string> => {
  if (!child.isRunning()) return child.exited
  child.process.kill("SIGTERM")
  const timer = setTimeout(() => child.process.kill("SIGKILL"), graceMs)
  const how = await child.exited
  clearTimeout(timer)
  return how
}

/** Stops every child still running, in the reverse order of their start (controller before workers before NATS). */
export const stopAll = async (graceMs = 8_000): Promise<void> => {
  for (const child of [...children].reverse()) {
    if (child.isRunning()) await stopChild(child, graceMs)
  }
}

/** Last resort from a synchronous `exit` handler. */
export const killAllSync = (): void => {
  for (const child of children) {
    if (child.isRunning()) {
      try {
        child.process.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// /proc

let clockTicks: number | undefined

/** Kernel clock ticks per second (utime and stime are in these). */
export const ticksPerSecond = (): number => {
  if (clockTicks !== undefined) return clockTicks
  try {
    const value = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim())
    clockTicks = Number.isFinite(value) && value > 0 ? value : 100
  } catch {
    clockTicks = 100
  }
  return clockTicks
}

/** utime + stime of a process, in seconds; undefined when it is gone. */
export const cpuSeconds = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name (field 2) may contain spaces: fields are counted after its closing paren.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // After the name: state is index 0, so utime (field 14) is index 11 and stime index 12.
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return (utime + stime) / ticksPerSecond()
  } catch {
    return undefined
  }
}

/** Resident set size in MiB (VmRSS); undefined when the process is gone. */
export const rssMiB = (pid: number): number | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
    return match?.[1] === undefined ? undefined : Number(match[1]) / 1024
  } catch {
    return undefined
  }
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat). */
export const machineTicks = (): { readonly busy: number; readonly total: number } | undefined => {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? ""
    const values = line.trim().split(/\s+/).slice(1).map(Number)
    const total = values.reduce((a, b) => a + b, 0)
    const idle = (values[3] ?? 0) + (values[4] ?? 0)
    return { busy: total - idle, total }
  } catch {
    return undefined
  }
}

export interface ProcessCost {
  /** CPU over the window, in % of one core. */
  readonly cpuPercent: number
  /** Largest VmRSS sampled over the window. */
  readonly peakRssMiB: number
}

/**
 * Samples the CPU time and RSS of some processes over a window: `start` at its beginning, `stop` at
 * its end. RSS is sampled every `intervalMs` in between (the peak is kept).
 */
export class CostMeter {
  private readonly startCpu = new Map<string, number>()
  private readonly peak = new Map<string, number>()
  private startAt = 0
  private startSelf: NodeJS.CpuUsage | undefined
  private startMachine: { readonly busy: number; readonly total: number } | undefined
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly pids: ReadonlyMap<string, number>,
    private readonly intervalMs = 250
  ) {}

  start(): void {
    this.startAt = performance.now()
    this.startSelf = process.cpuUsage()
    this.startMachine = machineTicks()
    for (const [name, pid] of this.pids) {
      this.startCpu.set(name, cpuSeconds(pid) ?? 0)
      this.peak.set(name, rssMiB(pid) ?? 0)
    }
    this.timer = setInterval(() => this.sample(), this.intervalMs)
    this.timer.unref()
  }

  private sample(): void {
    for (const [name, pid] of this.pids) {
      const rss = rssMiB(pid)
      if (rss !== undefined && rss > (this.peak.get(name) ?? 0)) this.peak.set(name, rss)
    }
  }

  /**
   * Ends the window. Per process: CPU % of one core and peak RSS; `self` is this (load generator)
   * process; `machine` is the whole machine's busy share in % of all its cores.
   */
  stop(): { readonly perProcess: Record<string, ProcessCost>; readonly selfCpuPercent: number; readonly machineBusyPercent: number } {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.sample()
    const seconds = (performance.now() - this.startAt) / 1000
    const perProcess: Record<string, ProcessCost> = {}
    for (const [name, pid] of this.pids) {
      const used = (cpuSeconds(pid) ?? this.startCpu.get(name) ?? 0) - (this.startCpu.get(name) ?? 0)
      perProcess[name] = { cpuPercent: (100 * used) / seconds, peakRssMiB: this.peak.get(name) ?? 0 }
    }
    const self = process.cpuUsage(this.startSelf)
    const machine = machineTicks()
    const machineBusyPercent =
      machine !== undefined && this.startMachine !== undefined && machine.total > this.startMachine.total
        ? (100 * (machine.busy - this.startMachine.busy)) / (machine.total - this.startMachine.total)
        : Number.NaN
    return { perProcess, selfCpuPercent: (100 * (self.user + self.system)) / 1e6 / seconds, machineBusyPercent }
  }
}

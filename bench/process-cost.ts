/**
 * What a process costs: its CPU time and resident memory, on Linux from /proc and elsewhere (macOS,
 * the BSDs) from `ps -o pid=,rss=,time=`, whose `time` column macOS prints to the hundredth of a
 * second (Linux's `ps` only to the second, hence /proc there). The machine's busy share comes from
 * `os.cpus()`, which works on both.
 */
import { execFile, execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { cpus } from "node:os"

export interface ProcessSample {
  /** User + system CPU time since the process started, in seconds. */
  readonly cpuSeconds: number
  readonly rssMiB: number
}

/** utime + stime of a `/proc/PID/stat` line, in seconds. */
export const parseProcStat = (stat: string, ticksPerSecond: number): number | undefined => {
  // The command name (field 2) may hold spaces and parens: fields are counted after its last paren.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // After the name, state is index 0, so utime (field 14) is index 11 and stime index 12.
  const utime = Number(fields[11])
  const stime = Number(fields[12])
  return Number.isFinite(utime) && Number.isFinite(stime) && fields.length > 12 ? (utime + stime) / ticksPerSecond : undefined
}

/** VmRSS of a `/proc/PID/status`, in MiB. */
export const parseProcStatusRss = (status: string): number | undefined => {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
  return match?.[1] === undefined ? undefined : Number(match[1]) / 1024
}

/** `ps`'s CPU time, `[[DD-]HH:]MM:SS[.ff]` (macOS: `1:02.53`, `12:01:02.53`; Linux: `00:01:02`, `1-02:03:04`), in seconds. */
export const parseCpuTime = (text: string): number | undefined => {
  const match = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$/.exec(text.trim())
  if (match === null) return undefined
  const [, days, hours, minutes, seconds] = match
  return Number(days ?? 0) * 86_400 + Number(hours ?? 0) * 3_600 + Number(minutes) * 60 + Number(seconds)
}

/** The output of `ps -o pid=,rss=,time= -p PID,...`: rss in KiB. Unreadable lines are left out. */
export const parsePs = (output: string): Map<number, ProcessSample> => {
  const samples = new Map<number, ProcessSample>()
  for (const line of output.split("\n")) {
    const [pid, rss, time] = line.trim().split(/\s+/)
    const cpuSeconds = parseCpuTime(time ?? "")
    if (pid === undefined || rss === undefined || cpuSeconds === undefined || !/^\d+$/.test(pid) || !/^\d+$/.test(rss)) continue
    samples.set(Number(pid), { cpuSeconds, rssMiB: Number(rss) / 1024 })
  }
  return samples
}

let clockTicks: number | undefined
/** Kernel clock ticks per second (/proc's utime and stime are in these). */
const ticksPerSecond = (): number => {
  if (clockTicks === undefined) {
    try {
      const value = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim())
      clockTicks = Number.isFinite(value) && value > 0 ? value : 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

const readProc = (pid: number): ProcessSample | undefined => {
  try {
    const cpuSeconds = parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"), ticksPerSecond())
    const rssMiB = parseProcStatusRss(readFileSync(`/proc/${pid}/status`, "utf8"))
    return cpuSeconds === undefined || rssMiB === undefined ? undefined : { cpuSeconds, rssMiB }
  } catch {
    return undefined // gone
  }
}

/** One `ps` for every pid, without blocking the load generator's event loop while it runs. */
const runPs = (pids: ReadonlyArray<number>): Promise<Map<number, ProcessSample>> =>
  new Promise((resolve) => {
    // ps exits 1 when some pid is gone; what it printed for the others still counts.
    execFile("ps", ["-o", "pid=,rss=,time=", "-p", pids.join(",")], { encoding: "utf8" }, (_error, stdout) => resolve(parsePs(stdout)))
  })

export type SampleSource = "proc" | "ps"

export const defaultSource: SampleSource = process.platform === "linux" ? "proc" : "ps"

/** CPU time and RSS of each pid that still runs. */
export const sampleProcesses = async (pids: ReadonlyArray<number>, source = defaultSource): Promise<Map<number, ProcessSample>> => {
  if (pids.length === 0) return new Map()
  if (source === "ps") return runPs(pids)
  const samples = new Map<number, ProcessSample>()
  for (const pid of pids) {
    const sample = readProc(pid)
    if (sample !== undefined) samples.set(pid, sample)
  }
  return samples
}

/** Busy and total CPU time of the whole machine, all cores, in ms. */
const machineTimes = (): { readonly busy: number; readonly total: number } => {
  let busy = 0
  let total = 0
  for (const { times } of cpus()) {
    const all = times.user + times.nice + times.sys + times.idle + times.irq
    busy += all - times.idle
    total += all
  }
  return { busy, total }
}

export interface ProcessCost {
  /** CPU over the window, in % of one core. */
  readonly cpuPercent: number
  /** Largest RSS sampled over the window. */
  readonly peakRssMiB: number
}

export interface WindowCost {
  readonly perProcess: Record<string, ProcessCost>
  /** This process (the load generator), % of one core. */
  readonly selfCpuPercent: number
  /** The whole machine's busy share, % of all its cores. */
  readonly machineBusyPercent: number
}

/**
 * The cost of some processes over a window: `start` at its beginning, `stop` at its end (call it
 * when the window ends; it may resolve a few ms later). RSS is sampled every `intervalMs` in
 * between; the peak is kept.
 */
export class CostMeter {
  private readonly startCpu = new Map<string, number>()
  private readonly peak = new Map<string, number>()
  private startAt = 0
  private startSelf: NodeJS.CpuUsage | undefined
  private startMachine = machineTimes()
  private timer: NodeJS.Timeout | undefined
  private started: Promise<void> = Promise.resolve()
  private sampling = false

  constructor(
    private readonly pids: ReadonlyMap<string, number>,
    private readonly intervalMs = 250
  ) {}

  start(): Promise<void> {
    this.startAt = performance.now()
    this.startSelf = process.cpuUsage()
    this.startMachine = machineTimes()
    this.started = this.sample().then((samples) => {
      for (const [name, pid] of this.pids) this.startCpu.set(name, samples.get(pid)?.cpuSeconds ?? 0)
    })
    this.timer = setInterval(() => {
      if (this.sampling) return // a slow `ps` is still running: skip a beat rather than pile them up
      this.sampling = true
      void this.sample().finally(() => (this.sampling = false))
    }, this.intervalMs)
    this.timer.unref()
    return this.started
  }

  private async sample(): Promise<Map<number, ProcessSample>> {
    const samples = await sampleProcesses([...this.pids.values()])
    for (const [name, pid] of this.pids) {
      const rss = samples.get(pid)?.rssMiB
      if (rss !== undefined && rss > (this.peak.get(name) ?? 0)) this.peak.set(name, rss)
    }
    return samples
  }

  async stop(): Promise<WindowCost> {
    if (this.timer !== undefined) clearInterval(this.timer)
    const endAt = performance.now()
    const self = process.cpuUsage(this.startSelf)
    const machine = machineTimes()
    const samplesPromise = this.sample()
    await this.started
    const samples = await samplesPromise
    const seconds = (endAt - this.startAt) / 1000
    const perProcess: Record<string, ProcessCost> = {}
    for (const [name, pid] of this.pids) {
      const from = this.startCpu.get(name) ?? 0
      perProcess[name] = { cpuPercent: (100 * ((samples.get(pid)?.cpuSeconds ?? from) - from)) / seconds, peakRssMiB: this.peak.get(name) ?? 0 }
    }
    return {
      perProcess,
      selfCpuPercent: (100 * (self.user + self.system)) / 1e6 / seconds,
      machineBusyPercent:
        machine.total > this.startMachine.total ? (100 * (machine.busy - this.startMachine.busy)) / (machine.total - this.startMachine.total) : Number.NaN
    }
  }
}

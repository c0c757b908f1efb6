/**
 * The relay benchmark's results: their shape (saved as JSON) and the markdown printed at the end
 * of a run. The targets are targets.ts's.
 */
import type { LoggedLine } from "./child.js"
import type { LoadStats, OneShotStats } from "./load.js"
import type { ProcessCost } from "./process-cost.js"
import type { ProfileInfo } from "./profile.js"
import type { RelayOptions } from "./relay-options.js"
import type { TargetCheck } from "./targets.js"

export interface RunStats extends LoadStats {
  /** The process serving the target (the floor server, or the controller). */
  readonly cpuPercent: number
  readonly peakRssMiB: number
  /** CPU time of the serving process per successful request of the window, in ms. */
  readonly cpuMsPerRequest: number
  /** The workers' summed CPU time per successful request, in ms (NaN on the floor). */
  readonly workersCpuMsPerRequest: number
  /** The same for every process serving the target (controller + workers + nats; or the floor). */
  readonly servingCpuMsPerRequest: number
  /** Every process of the benchmark (floor, controller, workers, nats). */
  readonly processes: Record<string, ProcessCost>
  /** This driver, which is the load generator. */
  readonly loadGeneratorCpuPercent: number
  /** The whole machine, % of all cores. */
  readonly machineBusyPercent: number
  /** CPU used by processes outside the benchmark, % of one core (machine busy minus ours). */
  readonly otherCpuPercent: number
}

export interface LevelResult {
  readonly concurrency: number
  readonly floor: RunStats
  /** The bare relay (bare-relay.ts): the same hops as the controller's, in plain JavaScript. */
  readonly bare: RunStats
  readonly controller: RunStats
}

export interface Sanity {
  readonly floorBytes: number
  readonly bareBytes: number
  readonly controllerBytes: number
  readonly floorTokens: number
  readonly bareTokens: number
  readonly controllerTokens: number
  /** The floor's, the bare relay's and the controller's token text are the same. */
  readonly sameTokenText: boolean
}

export interface HttpBaseline {
  readonly concurrency: number
  readonly floor: { readonly reqPerSecond: number; readonly p50Ms: number; readonly p99Ms: number; readonly errors: number }
  readonly controller: {
    readonly reqPerSecond: number
    readonly p50Ms: number
    readonly p99Ms: number
    readonly errors: number
    readonly cpuMsPerRequest: number
  }
}

export type StressResult = OneShotStats & { readonly controllerPeakRssMiB: number; readonly controllerCpuPercent: number }

/** Each target's first `seconds` of load (`--jit-warmup`), before the levels and not counted in them. */
export interface Startup {
  readonly seconds: number
  readonly concurrency: number
  readonly floor: LoadStats
  readonly bare: LoadStats
  readonly controller: LoadStats
}

/** The cluster and the floor right after start-up, before any request. */
export interface Idle {
  readonly loadAverage: ReadonlyArray<number>
  /** % of one core over 2 s. */
  readonly cpuPercent: Record<string, number>
  readonly rssMiB: Record<string, number>
}

export interface BenchResults {
  readonly startedAt: string
  readonly finishedAt: string
  readonly machine: { readonly cpus: number; readonly cpuModel: string; readonly memoryGiB: number; readonly node: string; readonly platform: string }
  readonly options: RelayOptions
  readonly idle: Idle
  readonly sanity: Sanity
  /** Absent when `--jit-warmup 0` (and in results saved before it existed). */
  readonly startup?: Startup | undefined
  readonly levels: ReadonlyArray<LevelResult>
  readonly addedTtftAtConcurrency1: { readonly p50Ms: number; readonly p99Ms: number } | undefined
  readonly bareAddedTtftAtConcurrency1: { readonly p50Ms: number; readonly p99Ms: number } | undefined
  /** GET /health on both servers: what the HTTP stack alone costs. */
  readonly httpBaseline: HttpBaseline
  readonly stress: StressResult | undefined
  readonly targets: ReadonlyArray<TargetCheck>
  readonly profile: ProfileInfo | undefined
  /** Distinct lines (numbers blanked) each child printed, warnings and errors first. */
  readonly childLogs: Record<string, ReadonlyArray<LoggedLine>>
  readonly notes: ReadonlyArray<string>
}

const f = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "n/a")
const kinds = (errorKinds: Record<string, number>) =>
  Object.entries(errorKinds)
    .map(([k, n]) => `${n}× ${k}`)
    .join("; ")

const startupPhrase = (s: Startup | undefined) =>
  s === undefined ? "" : `first ${s.seconds} s of unmeasured load on each target at concurrency ${s.concurrency} (its start-up, below), then `

/** Each target's first seconds of load: what a process just started does while V8 still compiles its request path. */
const startupSection = (r: BenchResults): Array<string> => {
  const s = r.startup
  if (s === undefined) return []
  const one = (name: string, l: LoadStats) =>
    `${name} ${f(l.reqPerSecond, 0)} req/s, TTFT p50 ${f(l.ttftP50Ms, 2)} / p99 ${f(l.ttftP99Ms, 2)} ms${l.errors > 0 ? `, ${l.errors} errors (${kinds(l.errorKinds)})` : ""}`
  return [
    `Start-up (each target's first ${s.seconds} s of load, concurrency ${s.concurrency}, before the levels and not counted in them; ` +
      `V8 is still compiling the request path): ${one("floor", s.floor)}; ${one("bare relay", s.bare)}; ${one("controller", s.controller)}; ` +
      `added TTFT controller − floor p50 ${f(s.controller.ttftP50Ms - s.floor.ttftP50Ms, 3)} ms, p99 ${f(s.controller.ttftP99Ms - s.floor.ttftP99Ms, 3)} ms.`,
    ""
  ]
}

const header = (r: BenchResults): Array<string> => {
  const o = r.options
  return [
    `## mlx-serving cluster benchmark (${r.startedAt})`,
    "",
    `${o.workers} synthetic workers (tokens_per_second: 0, first_token_ms: 0), ${o.tokens} tokens per request, ` +
      `${startupPhrase(r.startup)}${o.warmupSeconds} s warm-up + ${o.durationSeconds} s measured per level, closed loop.`,
    `Machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${f(r.machine.memoryGiB, 0)} GiB, Node ${r.machine.node}, ${r.machine.platform}.`,
    `Note: the ${r.machine.cpus} cores are shared by the load generator, the controller, the workers and nats-server ` +
      "(and the floor and the bare relay, idle while another target is measured): absolute numbers are a lower bound, the ratios are what matter. " +
      "CPU % is of one core.",
    "",
    ...(o.profile ? ["**Profiled run** (`--cpu-prof` on the controller): the controller is slower than usual.", ""] : []),
    `Idle, right after start-up: load average ${r.idle.loadAverage.map((l) => l.toFixed(2)).join(" ")}; CPU (% of one core) ` +
      Object.entries(r.idle.cpuPercent)
        .map(([name, cpu]) => `${name} ${f(cpu, 1)}`)
        .join(", ") +
      "; RSS (MiB) " +
      Object.entries(r.idle.rssMiB)
        .map(([name, rss]) => `${name} ${f(rss, 0)}`)
        .join(", ") +
      ".",
    `Sanity: one request each: floor ${r.sanity.floorTokens} tokens / ${r.sanity.floorBytes} bytes, ` +
      `bare relay ${r.sanity.bareTokens} tokens / ${r.sanity.bareBytes} bytes, controller ${r.sanity.controllerTokens} tokens / ${r.sanity.controllerBytes} bytes, ` +
      `same token text: ${r.sanity.sameTokenText ? "yes" : "NO"}.`,
    ""
  ]
}

const levelTable = (r: BenchResults): Array<string> => {
  const out = [
    "| concurrency | target | req/s | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s | CPU % | CPU ms/req | RSS MiB | errors |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  ]
  for (const l of r.levels) {
    const row = (name: string, s: RunStats) =>
      `| ${l.concurrency} | ${name} | ${f(s.reqPerSecond, 0)} | ${f(s.ttftP50Ms, 2)} | ${f(s.ttftP99Ms, 2)} | ${f(s.tokensPerSecond, 0)} | ${f(s.cpuPercent, 0)} | ${f(s.cpuMsPerRequest, 2)} | ${f(s.peakRssMiB, 0)} | ${s.errors} |`
    const ratioRow = (name: string, a: RunStats, b: RunStats) =>
      `| ${l.concurrency} | ${name} | ${ratio(a.reqPerSecond, b.reqPerSecond)} | ${ratio(a.ttftP50Ms, b.ttftP50Ms)} | ${ratio(a.ttftP99Ms, b.ttftP99Ms)} | ${ratio(a.tokensPerSecond, b.tokensPerSecond)} | ${ratio(a.cpuPercent, b.cpuPercent)} | ${ratio(a.cpuMsPerRequest, b.cpuMsPerRequest)} | ${ratio(a.peakRssMiB, b.peakRssMiB)} | ${b.errors === 0 ? (a.errors === 0 ? "—" : `+${a.errors}`) : ratio(a.errors, b.errors)} |`
    out.push(
      row("floor", l.floor),
      row("bare relay", l.bare),
      row("controller", l.controller),
      ratioRow("ratio ctrl/floor", l.controller, l.floor),
      ratioRow("ratio ctrl/bare", l.controller, l.bare)
    )
  }
  out.push("")
  const added = r.addedTtftAtConcurrency1
  const bare = r.bareAddedTtftAtConcurrency1
  if (added !== undefined && bare !== undefined) {
    out.push(
      `Added TTFT at concurrency 1: controller − floor p50 ${f(added.p50Ms, 3)} ms, p99 ${f(added.p99Ms, 3)} ms; ` +
        `bare relay − floor p50 ${f(bare.p50Ms, 3)} ms, p99 ${f(bare.p99Ms, 3)} ms (the hops alone); ` +
        `controller − bare relay p50 ${f(added.p50Ms - bare.p50Ms, 3)} ms, p99 ${f(added.p99Ms - bare.p99Ms, 3)} ms (the controller's and workers' own code).`,
      ""
    )
  }
  return out
}

const cpuTable = (r: BenchResults): Array<string> => {
  const out = [
    `CPU of every process while the controller was measured (% of one core; the machine has ${r.machine.cpus * 100} %):`,
    "",
    "| concurrency | controller | workers (sum) | workers CPU ms/req | nats-server | load generator | cluster CPU ms/req | other processes | floor run: floor | floor run: load gen | floor run: other processes | bare run: front CPU ms/req | bare run: workers CPU ms/req | bare run: all CPU ms/req |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  ]
  for (const l of r.levels) {
    const c = l.controller
    const workers = Object.entries(c.processes)
      .filter(([name]) => name.startsWith("worker"))
      .reduce((n, [, cost]) => n + cost.cpuPercent, 0)
    out.push(
      `| ${l.concurrency} | ${f(c.cpuPercent, 0)} | ${f(workers, 0)} | ${f(c.workersCpuMsPerRequest, 2)} | ${f(c.processes["nats"]?.cpuPercent ?? Number.NaN, 0)} | ${f(c.loadGeneratorCpuPercent, 0)} | ${f(c.servingCpuMsPerRequest, 2)} | ${f(c.otherCpuPercent, 0)} | ${f(l.floor.cpuPercent, 0)} | ${f(l.floor.loadGeneratorCpuPercent, 0)} | ${f(l.floor.otherCpuPercent, 0)} | ` +
        `${f(l.bare.cpuMsPerRequest, 2)} | ${f(l.bare.workersCpuMsPerRequest, 2)} | ${f(l.bare.servingCpuMsPerRequest, 2)} |`
    )
  }
  out.push(
    "",
    "\"other processes\": CPU used on this machine by processes outside the benchmark during the window (% of one core). " +
      "When it is high, every number above is depressed and TTFT inflated (the controller path wakes 4 processes per request, the floor 1).",
    ""
  )
  return out
}

const baselineAndStress = (r: BenchResults): Array<string> => {
  const b = r.httpBaseline
  const out = [
    `HTTP stack alone (GET /health, concurrency ${b.concurrency}): floor ${f(b.floor.reqPerSecond, 0)} req/s (p50 ${f(b.floor.p50Ms, 2)} ms), ` +
      `controller ${f(b.controller.reqPerSecond, 0)} req/s (p50 ${f(b.controller.p50Ms, 2)} ms, ${f(b.controller.cpuMsPerRequest, 2)} ms CPU/req), ` +
      `ratio ${ratio(b.controller.reqPerSecond, b.floor.reqPerSecond)}; errors ${b.floor.errors}/${b.controller.errors}.`,
    ""
  ]
  const s = r.stress
  if (s !== undefined) {
    out.push(
      `Stress: ${s.count} streams started at once against the controller: ${s.succeeded} completed, ${s.errors} errors, ` +
        `wall time ${f(s.wallMs, 0)} ms, TTFT p50 ${f(s.ttftP50Ms, 1)} ms / p99 ${f(s.ttftP99Ms, 1)} ms, ` +
        `controller peak RSS ${f(s.controllerPeakRssMiB, 0)} MiB.`,
      ...Object.entries(s.errorKinds).map(([kind, n]) => `  - ${n}× ${kind}`)
    )
  }
  const underTsx =
    r.options.runtime === "dist"
      ? "The cluster ran the build (`node dist/main.js`, --runtime dist); the floor runs under tsx (`node --import tsx`), whose loader thread and inline source maps are part of its figure"
      : "Both run under tsx (`node --import tsx`), whose loader thread and inline source maps are part of every figure here (`--runtime dist` runs the cluster from `npm run build`'s output instead)"
  out.push(
    `Memory: the controller took ${f(r.idle.rssMiB["controller"] ?? Number.NaN, 0)} MiB idle, right after start-up; the floor ` +
      `${f(r.idle.rssMiB["floor"] ?? Number.NaN, 0)} MiB. ${underTsx}: an idle \`node --import tsx\` process that loaded nothing takes ` +
      "about 90 MiB, a bare `node` about 40. What load adds is the peak minus the idle figure.",
    ""
  )
  return out
}

/** Errors per level, then every warning and error line the children printed (not only what the output tail kept). */
const problems = (r: BenchResults): Array<string> => {
  const out: Array<string> = []
  const errorLevels = r.levels.flatMap((l) =>
    (["floor", "controller"] as const).flatMap((t) => (l[t].errors > 0 ? [`  - c=${l.concurrency} ${t}: ${kinds(l[t].errorKinds)}`] : []))
  )
  if (errorLevels.length > 0) out.push("Errors:", ...errorLevels, "")
  const logged = Object.entries(r.childLogs).filter(([, lines]) => lines.length > 0)
  if (logged.length === 0) return out
  out.push(`What the children logged (log_level ${r.options.logLevel}; numbers blanked; warnings and errors first, then most frequent):`)
  for (const [name, lines] of logged) {
    const serious = lines.filter((l) => l.level !== "other")
    const shown = [...serious.slice(0, 20), ...lines.filter((l) => l.level === "other").slice(0, 3)]
    for (const { line, count } of shown) out.push(`  - ${name}: ${count}× ${line.length > 220 ? `${line.slice(0, 217)}…` : line}`)
    if (lines.length > shown.length) {
      out.push(`  - ${name}: … ${lines.length - shown.length} more distinct lines${serious.length > 20 ? `, ${serious.length - 20} of them warnings or errors` : ""} (see the JSON)`)
    }
  }
  out.push("")
  return out
}

const profileSection = (p: ProfileInfo): Array<string> => [
  `CPU profile of the controller: ${p.file}`,
  p.mappedNodes > 0
    ? `  ${p.mappedNodes} call-tree nodes of project code point at their .ts lines (tsx's source maps applied).`
    : "  Positions as tsx compiled them (every project function on line 2 of its file; the names are right).",
  `  Measured windows, seconds from the profile's start: ${p.windows.map((w) => `${w.label} ${w.fromS.toFixed(1)}–${w.toS.toFixed(1)}`).join(", ")}.`,
  "  View it: Chrome DevTools → Performance → \"Load profile…\" (select a window on the time line, then Bottom-Up for self time), " +
    "or open the file in VS Code (its built-in profile table; the Flame Chart Visualizer extension adds a flame graph).",
  ""
]

export const formatResults = (r: BenchResults): string =>
  [
    ...header(r),
    ...startupSection(r),
    ...levelTable(r),
    ...cpuTable(r),
    ...baselineAndStress(r),
    ...problems(r),
    ...(r.profile === undefined ? [] : profileSection(r.profile)),
    "Targets (issues 10 and 11):",
    "",
    ...r.targets.map((t) => `- [${t.status === "met" ? "x" : " "}] ${t.status.toUpperCase()}: ${t.name} (${t.detail})`),
    "",
    ...r.notes.map((note) => `Note: ${note}`)
  ].join("\n")

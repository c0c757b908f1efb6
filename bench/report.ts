/**
 * The benchmark's results: their shape (saved as JSON), the targets of issue 6, and the markdown
 * printed at the end of a run.
 */
import type { LoadStats, OneShotStats } from "./load.js"
import type { ProcessCost } from "./processes.js"
import type { ProfileSummary } from "./top-functions.js"

export interface RunStats extends LoadStats {
  /** The process serving the target (the floor server, or the controller). */
  readonly cpuPercent: number
  readonly peakRssMiB: number
  /** CPU time of the serving process per successful request of the window, in ms. */
  readonly cpuMsPerRequest: number
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
  readonly controller: RunStats
}

export interface TargetCheck {
  readonly name: string
  readonly met: boolean
  readonly detail: string
}

export interface BenchResults {
  readonly startedAt: string
  readonly finishedAt: string
  readonly machine: { readonly cpus: number; readonly cpuModel: string; readonly memoryGiB: number; readonly node: string; readonly platform: string }
  readonly options: {
    readonly concurrency: ReadonlyArray<number>
    readonly durationSeconds: number
    readonly warmupSeconds: number
    readonly tokens: number
    readonly workers: number
    readonly stress: number
    readonly profile: boolean
    readonly logLevel: string
  }
  /** Load average when the run started, and CPU of the idle cluster (% of one core) over 2 s. */
  readonly before: { readonly loadAverage: ReadonlyArray<number>; readonly idleCpuPercent: Record<string, number> }
  readonly sanity: {
    readonly floorBytes: number
    readonly controllerBytes: number
    readonly floorTokens: number
    readonly controllerTokens: number
    readonly sameTokenText: boolean
  }
  readonly levels: ReadonlyArray<LevelResult>
  readonly addedTtftAtConcurrency1: { readonly p50Ms: number; readonly p99Ms: number } | undefined
  /** GET /health on both servers: what the HTTP stack alone costs. */
  readonly httpBaseline: {
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
  readonly stress: (OneShotStats & { readonly controllerPeakRssMiB: number; readonly controllerCpuPercent: number }) | undefined
  readonly targets: ReadonlyArray<TargetCheck>
  /** Over every measured window of the controller (startup and idle time left out). */
  readonly profile: ProfileSummary | undefined
  /** The same, per concurrency level. */
  readonly profileByLevel: Record<string, ProfileSummary>
  /** Distinct lines (numbers blanked) each child printed, most frequent first. */
  readonly childLogs: Record<string, ReadonlyArray<{ readonly line: string; readonly count: number }>>
  readonly notes: ReadonlyArray<string>
}

const f = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : "n/a")
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "n/a")

export const checkTargets = (
  levels: ReadonlyArray<LevelResult>,
  added: BenchResults["addedTtftAtConcurrency1"],
  stress: BenchResults["stress"]
): Array<TargetCheck> => {
  const checks: Array<TargetCheck> = []
  if (added === undefined) {
    checks.push({ name: "added TTFT at concurrency 1 (≤ 0.5 ms p50, ≤ 3 ms p99)", met: false, detail: "not measured (concurrency 1 not run)" })
  } else {
    checks.push({
      name: "added TTFT p50 at concurrency 1 ≤ 0.5 ms",
      met: added.p50Ms <= 0.5,
      detail: `${f(added.p50Ms, 3)} ms`
    })
    checks.push({
      name: "added TTFT p99 at concurrency 1 ≤ 3 ms",
      met: added.p99Ms <= 3,
      detail: `${f(added.p99Ms, 3)} ms`
    })
  }
  const best = levels.reduce<LevelResult | undefined>(
    (b, l) => (b === undefined || l.controller.reqPerSecond > b.controller.reqPerSecond ? l : b),
    undefined
  )
  checks.push({
    name: "≥ 1,000 requests/s through the controller (best level)",
    met: best !== undefined && best.controller.reqPerSecond >= 1000,
    detail: best === undefined ? "no level run" : `${f(best.controller.reqPerSecond, 0)} req/s at concurrency ${best.concurrency}`
  })
  const shares = levels.map((l) => ({ c: l.concurrency, share: l.controller.tokensPerSecond / l.floor.tokensPerSecond }))
  checks.push({
    name: "relayed tokens/s ≥ 50 % of the floor's at every level",
    met: shares.length > 0 && shares.every((s) => s.share >= 0.5),
    detail: shares.map((s) => `c=${s.c}: ${f(100 * s.share, 0)} %`).join(", ")
  })
  checks.push({
    name: `${stress?.count ?? 2000} concurrent streams without errors`,
    met: stress !== undefined && stress.errors === 0 && stress.succeeded === stress.count,
    detail:
      stress === undefined
        ? "not run"
        : `${stress.errors} errors of ${stress.count}, wall time ${f(stress.wallMs, 0)} ms` +
          (stress.errors > 0 ? ` (${Object.entries(stress.errorKinds).map(([k, n]) => `${n}× ${k}`).join("; ")})` : "")
  })
  return checks
}

export const formatResults = (r: BenchResults): string => {
  const out: Array<string> = []
  const o = r.options
  out.push(
    `## mlx-serving cluster benchmark (${r.startedAt})`,
    "",
    `${o.workers} synthetic workers (tokens_per_second: 0, first_token_ms: 0), ${o.tokens} tokens per request, ` +
      `${o.warmupSeconds} s warm-up + ${o.durationSeconds} s measured per level, closed loop.`,
    `Machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${f(r.machine.memoryGiB, 0)} GiB, Node ${r.machine.node}.`,
    `Note: the ${r.machine.cpus} cores are shared by the load generator, the controller, the workers and nats-server ` +
      "(and the floor server): absolute numbers are a lower bound, the ratios are what matter. CPU % is of one core.",
    ""
  )
  if (o.profile) out.push("**Profiled run** (`--cpu-prof` on the controller): the controller is slower than usual.", "")
  out.push(
    `Before the run: load average ${r.before.loadAverage.map((l) => l.toFixed(2)).join(" ")}; idle cluster CPU (% of one core): ` +
      Object.entries(r.before.idleCpuPercent)
        .map(([name, cpu]) => `${name} ${f(cpu, 1)}`)
        .join(", ") +
      ".",
    `Sanity: one request each: floor ${r.sanity.floorTokens} tokens / ${r.sanity.floorBytes} bytes, ` +
      `controller ${r.sanity.controllerTokens} tokens / ${r.sanity.controllerBytes} bytes, same token text: ${r.sanity.sameTokenText ? "yes" : "NO"}.`,
    "",
    "| concurrency | target | req/s | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s | CPU % | CPU ms/req | RSS MiB | errors |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  )
  for (const l of r.levels) {
    const row = (name: string, s: RunStats) =>
      `| ${l.concurrency} | ${name} | ${f(s.reqPerSecond, 0)} | ${f(s.ttftP50Ms, 2)} | ${f(s.ttftP99Ms, 2)} | ${f(s.tokensPerSecond, 0)} | ${f(s.cpuPercent, 0)} | ${f(s.cpuMsPerRequest, 2)} | ${f(s.peakRssMiB, 0)} | ${s.errors} |`
    out.push(row("floor", l.floor), row("controller", l.controller))
    const a = l.controller
    const b = l.floor
    out.push(
      `| ${l.concurrency} | ratio ctrl/floor | ${ratio(a.reqPerSecond, b.reqPerSecond)} | ${ratio(a.ttftP50Ms, b.ttftP50Ms)} | ${ratio(a.ttftP99Ms, b.ttftP99Ms)} | ${ratio(a.tokensPerSecond, b.tokensPerSecond)} | ${ratio(a.cpuPercent, b.cpuPercent)} | ${ratio(a.cpuMsPerRequest, b.cpuMsPerRequest)} | ${ratio(a.peakRssMiB, b.peakRssMiB)} | ${b.errors === 0 ? (a.errors === 0 ? "—" : `+${a.errors}`) : ratio(a.errors, b.errors)} |`
    )
  }
  out.push("")
  if (r.addedTtftAtConcurrency1 !== undefined) {
    out.push(
      `Added TTFT at concurrency 1 (controller − floor): p50 ${f(r.addedTtftAtConcurrency1.p50Ms, 3)} ms, p99 ${f(r.addedTtftAtConcurrency1.p99Ms, 3)} ms.`,
      ""
    )
  }
  out.push(
    "CPU of every process while the controller was measured (% of one core; the machine has " +
      `${r.machine.cpus * 100} %):`,
    "",
    "| concurrency | controller | workers (sum) | nats-server | load generator | cluster CPU ms/req | other processes | floor run: floor | floor run: load gen | floor run: other processes |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  )
  for (const l of r.levels) {
    const procs = Object.entries(l.controller.processes)
    const workers = procs.filter(([name]) => name.startsWith("worker")).reduce((n, [, c]) => n + c.cpuPercent, 0)
    const nats = l.controller.processes["nats"]?.cpuPercent ?? Number.NaN
    out.push(
      `| ${l.concurrency} | ${f(l.controller.cpuPercent, 0)} | ${f(workers, 0)} | ${f(nats, 0)} | ${f(l.controller.loadGeneratorCpuPercent, 0)} | ${f(l.controller.servingCpuMsPerRequest, 2)} | ${f(l.controller.otherCpuPercent, 0)} | ${f(l.floor.cpuPercent, 0)} | ${f(l.floor.loadGeneratorCpuPercent, 0)} | ${f(l.floor.otherCpuPercent, 0)} |`
    )
  }
  out.push(
    "",
    "\"other processes\": CPU used on this machine by processes outside the benchmark during the window (% of one core). " +
      "When it is high, every number above is depressed and TTFT inflated (the controller path wakes 4 processes per request, the floor 1).",
    ""
  )
  {
    const b = r.httpBaseline
    out.push(
      `HTTP stack alone (GET /health, concurrency ${b.concurrency}): floor ${f(b.floor.reqPerSecond, 0)} req/s (p50 ${f(b.floor.p50Ms, 2)} ms), ` +
        `controller ${f(b.controller.reqPerSecond, 0)} req/s (p50 ${f(b.controller.p50Ms, 2)} ms, ${f(b.controller.cpuMsPerRequest, 2)} ms CPU/req), ` +
        `ratio ${ratio(b.controller.reqPerSecond, b.floor.reqPerSecond)}; errors ${b.floor.errors}/${b.controller.errors}.`,
      ""
    )
  }
  if (r.stress !== undefined) {
    const s = r.stress
    out.push(
      `Stress: ${s.count} streams started at once against the controller: ${s.succeeded} completed, ${s.errors} errors, ` +
        `wall time ${f(s.wallMs, 0)} ms, TTFT p50 ${f(s.ttftP50Ms, 1)} ms / p99 ${f(s.ttftP99Ms, 1)} ms, ` +
        `controller peak RSS ${f(s.controllerPeakRssMiB, 0)} MiB.`
    )
    if (s.errors > 0) {
      for (const [kind, n] of Object.entries(s.errorKinds)) out.push(`  - ${n}× ${kind}`)
    }
    out.push("")
  }
  const errorLevels = r.levels.flatMap((l) =>
    (["floor", "controller"] as const).flatMap((t) =>
      l[t].errors > 0 ? [`  - c=${l.concurrency} ${t}: ${Object.entries(l[t].errorKinds).map(([k, n]) => `${n}× ${k}`).join("; ")}`] : []
    )
  )
  if (errorLevels.length > 0) out.push("Errors:", ...errorLevels, "")
  const logged = Object.entries(r.childLogs).filter(([, lines]) => lines.length > 0)
  if (logged.length > 0) {
    out.push(`What the children logged (log_level ${r.options.logLevel}; numbers blanked; most frequent first):`)
    for (const [name, lines] of logged) {
      for (const { line, count } of lines.slice(0, 4)) out.push(`  - ${name}: ${count}× ${line.length > 220 ? `${line.slice(0, 217)}…` : line}`)
      if (lines.length > 4) out.push(`  - ${name}: … ${lines.length - 4} more distinct lines (see the JSON)`)
    }
    out.push("")
  }
  out.push("Targets:", "")
  for (const t of r.targets) out.push(`- [${t.met ? "x" : " "}] ${t.met ? "MET" : "MISSED"}: ${t.name} (${t.detail})`)
  out.push("")
  for (const note of r.notes) out.push(`Note: ${note}`)
  return out.join("\n")
}

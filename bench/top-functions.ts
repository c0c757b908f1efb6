/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): the functions with the most self time,
 * and self time per package / area (effect, @effect/platform, nats, node internals, GC, the
 * project's own src/).
 *
 *   tsx bench/top-functions.ts FILE.cpuprofile [--top 30] [--skip-ms MS]
 *
 * `bench/main.ts --profile` calls `summariseProfile` with the measured windows of the run only
 * (startup, mostly tsx compiling modules, would otherwise dominate).
 *
 * Idle time is left out of the percentages: they are shares of the time the process was busy.
 */
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { makeSourceMapper, type SourceMapper, sourceLineText } from "./source-maps.js"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}

interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface FunctionTime {
  readonly name: string
  readonly location: string
  readonly area: string
  /** The source line a project function starts on (mapped through tsx's source maps). */
  readonly code?: string
  readonly selfMs: number
  /** Share of busy (non-idle) time. */
  readonly percent: number
}

export interface AreaTime {
  readonly area: string
  readonly selfMs: number
  readonly percent: number
}

/** Inclusive time of a project (src/) function: samples with it anywhere on the stack. */
export interface InclusiveTime {
  readonly name: string
  readonly location: string
  readonly code?: string
  readonly totalMs: number
  readonly percent: number
}

/** A span of the profile's clock, in microseconds (CLOCK_MONOTONIC: `process.hrtime` / 1000 in any process). */
export interface Window {
  readonly fromUs: number
  readonly toUs: number
}

export interface ProfileSummary {
  readonly file: string
  /** The windows counted; empty: the whole profile. */
  readonly windows: ReadonlyArray<Window>
  readonly totalMs: number
  readonly idleMs: number
  readonly busyMs: number
  readonly gcMs: number
  readonly topFunctions: ReadonlyArray<FunctionTime>
  readonly areas: ReadonlyArray<AreaTime>
  readonly projectInclusive: ReadonlyArray<InclusiveTime>
}

const isProfile = (value: unknown): value is CpuProfile =>
  typeof value === "object" &&
  value !== null &&
  Array.isArray((value as { nodes?: unknown }).nodes) &&
  Array.isArray((value as { samples?: unknown }).samples) &&
  Array.isArray((value as { timeDeltas?: unknown }).timeDeltas)

const root = pathToFileURL(resolve(import.meta.dirname, "..")).href + "/"

/** `file:///work/main/node_modules/effect/dist/esm/internal/fiberRuntime.js` → `effect/…/fiberRuntime.js`. */
const shortUrl = (url: string): string => {
  if (url === "") return "(native)"
  let path = url.startsWith(root) ? url.slice(root.length) : url
  const nm = path.lastIndexOf("node_modules/")
  if (nm !== -1) {
    path = path.slice(nm + "node_modules/".length)
    const parts = path.split("/")
    const pkg = parts[0]?.startsWith("@") === true ? `${parts[0]}/${parts[1] ?? ""}` : (parts[0] ?? "")
    const file = parts[parts.length - 1] ?? ""
    return `${pkg}/…/${file}`
  }
  return path
}

/** The package or area a frame belongs to. */
export const areaOf = (frame: CallFrame): string => {
  const { url, functionName } = frame
  if (url === "") {
    if (functionName === "(garbage collector)") return "(gc)"
    if (functionName === "(program)") return "(program: V8/native, unattributed)"
    if (functionName === "(idle)") return "(idle)"
    return "(native/builtins)"
  }
  if (url.startsWith("node:")) return "node internals"
  const nm = url.lastIndexOf("node_modules/")
  if (nm !== -1) {
    const parts = url.slice(nm + "node_modules/".length).split("/")
    return parts[0]?.startsWith("@") === true ? `${parts[0]}/${parts[1] ?? ""}` : (parts[0] ?? "?")
  }
  if (url.startsWith(root)) {
    const path = url.slice(root.length)
    const dir = path.split("/").slice(0, 2).join("/")
    return dir
  }
  return "(other)"
}

const frameName = (frame: CallFrame) => (frame.functionName === "" ? "(anonymous)" : frame.functionName)
const isProject = (frame: CallFrame) => frame.url.startsWith(root) && !frame.url.includes("/node_modules/")

/** Location and, for the project's .ts files, the source line (through tsx's source maps). */
const describeFrame = (frame: CallFrame, mapper: SourceMapper): { location: string; code?: string } => {
  if (frame.url === "") return { location: "" }
  if (isProject(frame) && frame.url.endsWith(".ts")) {
    const path = fileURLToPath(frame.url)
    const line = mapper.lineOf(path, frame.lineNumber, frame.columnNumber)
    if (line !== undefined) return { location: `${shortUrl(frame.url)}:${line}`, code: sourceLineText(path, line) }
  }
  return { location: `${shortUrl(frame.url)}:${frame.lineNumber + 1}` }
}

/**
 * Self time per function and per area, and inclusive time of the project's own functions. With
 * `windows`, only samples taken inside one of them count (the profile's timestamps are
 * CLOCK_MONOTONIC microseconds, the clock of `process.hrtime` in every process of the machine).
 */
export const summariseProfile = (file: string, top = 30, windows: ReadonlyArray<Window> = []): ProfileSummary => {
  const json: unknown = JSON.parse(readFileSync(file, "utf8"))
  if (!isProfile(json)) throw new Error(`${file} is not a V8 .cpuprofile`)
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of json.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const positions = new Map<string, Array<readonly [number, number]>>()
  for (const node of json.nodes) {
    const frame = node.callFrame
    if (!isProject(frame) || !frame.url.endsWith(".ts")) continue
    const path = fileURLToPath(frame.url)
    const list = positions.get(path) ?? []
    list.push([frame.lineNumber, frame.columnNumber])
    positions.set(path, list)
  }
  const mapper = makeSourceMapper(positions)
  const inWindows = (t: number) => windows.length === 0 || windows.some((w) => t >= w.fromUs && t < w.toUs)
  const selfUs = new Map<number, number>()
  // Sample i lasts until sample i+1: its duration is timeDeltas[i+1]; the last one until endTime.
  let at = json.startTime
  const stamps = json.timeDeltas.map((delta) => (at += delta))
  for (let i = 0; i < json.samples.length; i++) {
    const id = json.samples[i]
    if (id === undefined) continue
    const here = stamps[i] ?? json.startTime
    if (!inWindows(here)) continue
    const next = i + 1 < stamps.length ? (stamps[i + 1] ?? here) : json.endTime
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, next - here))
  }
  let idleUs = 0
  let gcUs = 0
  let totalUs = 0
  const byFunction = new Map<string, { name: string; location: string; code?: string; area: string; us: number }>()
  const byArea = new Map<string, number>()
  const inclusive = new Map<string, { name: string; location: string; code?: string; us: number }>()
  for (const [id, us] of selfUs) {
    const node = byId.get(id)
    if (node === undefined) continue
    totalUs += us
    const frame = node.callFrame
    if (frame.functionName === "(idle)") {
      idleUs += us
      continue
    }
    if (frame.functionName === "(garbage collector)") gcUs += us
    const name = frameName(frame)
    const described = describeFrame(frame, mapper)
    const key = `${name}@${described.location}`
    const area = areaOf(frame)
    const entry = byFunction.get(key) ?? { name, ...described, area, us: 0 }
    entry.us += us
    byFunction.set(key, entry)
    byArea.set(area, (byArea.get(area) ?? 0) + us)
    // Every project function on this node's stack, once each.
    const seen = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame
      if (f === undefined || !isProject(f)) continue
      const d = describeFrame(f, mapper)
      const k = `${frameName(f)}@${d.location}`
      if (seen.has(k)) continue
      seen.add(k)
      const e = inclusive.get(k) ?? { name: frameName(f), ...d, us: 0 }
      e.us += us
      inclusive.set(k, e)
    }
  }
  const busyUs = totalUs - idleUs
  const pct = (us: number) => (busyUs > 0 ? (100 * us) / busyUs : 0)
  return {
    file,
    windows,
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    busyMs: busyUs / 1000,
    gcMs: gcUs / 1000,
    topFunctions: [...byFunction.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, location: f.location, ...(f.code === undefined ? {} : { code: f.code }), area: f.area, selfMs: f.us / 1000, percent: pct(f.us) })),
    areas: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, selfMs: us / 1000, percent: pct(us) })),
    projectInclusive: [...inclusive.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, Math.min(top, 20))
      .map((f) => ({ name: f.name, location: f.location, ...(f.code === undefined ? {} : { code: f.code }), totalMs: f.us / 1000, percent: pct(f.us) }))
  }
}

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/`/g, "'")
const describe = (f: { readonly name: string; readonly code?: string }) =>
  f.code === undefined || f.code === "" ? `\`${cell(f.name)}\`` : `\`${cell(f.name)}\` ← \`${cell(f.code)}\``

export const formatSummary = (summary: ProfileSummary): string => {
  const lines: Array<string> = []
  lines.push(`profile ${summary.file}${summary.windows.length === 0 ? "" : ` (${summary.windows.length} measured windows only)`}`)
  lines.push(
    `  ${summary.totalMs.toFixed(0)} ms sampled, ${summary.busyMs.toFixed(0)} ms busy (idle ${summary.idleMs.toFixed(0)} ms); GC ${summary.gcMs.toFixed(0)} ms`
  )
  lines.push("", "Self time by area (% of busy time):", "", "| area | self ms | % |", "|---|---:|---:|")
  for (const a of summary.areas) lines.push(`| ${a.area} | ${a.selfMs.toFixed(0)} | ${a.percent.toFixed(1)} |`)
  lines.push("", "Top functions by self time (% of busy time):", "", "| # | function | location | area | self ms | % |", "|---:|---|---|---|---:|---:|")
  summary.topFunctions.forEach((f, i) =>
    lines.push(`| ${i + 1} | ${describe(f)} | ${f.location} | ${f.area} | ${f.selfMs.toFixed(0)} | ${f.percent.toFixed(1)} |`)
  )
  if (summary.projectInclusive.length > 0) {
    lines.push(
      "",
      "Project (src/) functions by inclusive time (synchronous stacks only: Effect continuations run from the fiber runtime, not from their caller):",
      "",
      "| function | location | total ms | % |",
      "|---|---|---:|---:|"
    )
    for (const f of summary.projectInclusive) lines.push(`| ${describe(f)} | ${f.location} | ${f.totalMs.toFixed(0)} | ${f.percent.toFixed(1)} |`)
  }
  return lines.join("\n")
}

const runAsScript = process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href

if (runAsScript) {
  const args = process.argv.slice(2)
  const valueOf = (name: string) => {
    const i = args.indexOf(`--${name}`)
    return i === -1 ? undefined : args[i + 1]
  }
  const top = Number(valueOf("top") ?? "30")
  const skipMs = Number(valueOf("skip-ms") ?? "0")
  const files = args.filter((a, i) => !a.startsWith("--") && !(args[i - 1] ?? "").startsWith("--"))
  if (files.length === 0 || !Number.isInteger(top) || top <= 0 || !Number.isFinite(skipMs) || skipMs < 0) {
    process.stderr.write(
      "usage: tsx bench/top-functions.ts FILE.cpuprofile... [--top N] [--skip-ms MS]\n" +
        "  --skip-ms MS   leave out the first MS milliseconds of the profile (startup: module loading)\n"
    )
    process.exit(1)
  }
  for (const file of files) {
    let windows: ReadonlyArray<Window> = []
    if (skipMs > 0) {
      const json: unknown = JSON.parse(readFileSync(file, "utf8"))
      if (isProfile(json)) windows = [{ fromUs: json.startTime + skipMs * 1000, toUs: Number.POSITIVE_INFINITY }]
    }
    process.stdout.write(`${formatSummary(summariseProfile(file, top, windows))}\n\n`)
  }
}

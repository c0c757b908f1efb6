/**
 * `--profile`: the controller runs with `--cpu-prof` (V8's sampling profiler, written to
 * bench/profiles/ when the process exits), to be read in Chrome DevTools or VS Code (README,
 * "Benchmark").
 *
 * Read as it is, such a profile of tsx-run code is hard to use: tsx compiles each module to one
 * line, so every project function sits at `file.ts:2`, and it wraps each `const f = () => ...` in
 * `__name(...)` (to keep `f.name`), which hides the name from V8: most of this codebase's
 * functions show as "(anonymous)". `--enable-source-maps` changes neither (it maps stack traces,
 * not profiles). So the controller also preloads source-map-dump.ts, and the benchmark rewrites
 * the profile: each project function at its .ts line and column, and an anonymous one named after
 * what it is assigned to on that line (`canonicalTarget`, `request`), where there is such a name.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { SourceMap, type SourceMapPayload } from "node:module"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

/** The controller's node flags and environment for a profiled run. */
export const profiledController = (dir: string, mapsFile: string) => ({
  nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir, "--import", "./bench/source-map-dump.ts"],
  env: { BENCH_SOURCE_MAPS: mapsFile }
})

/** The profile of `pid`'s main thread in `dir` (`CPU.DATE.TIME.PID.THREAD.SEQ.cpuprofile`; thread 1 is tsx's loader). */
export const findProfile = (dir: string, pid: number): string | undefined => {
  const file = readdirSync(dir)
    .filter((name) => name.endsWith(".cpuprofile") && name.includes(`.${pid}.0.`))
    .sort()
    .pop()
  return file === undefined ? undefined : join(dir, file)
}

/** The parts of a `.cpuprofile` this module reads; the other fields are kept as they are. */
export interface CpuProfile {
  readonly startTime: number
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly [field: string]: unknown
}

interface ProfileNode {
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
    readonly columnNumber: number
    readonly [field: string]: unknown
  }
  readonly positionTicks?: unknown
  readonly [field: string]: unknown
}

/** The original 0-based line and column of a generated position, when the URL has a map; the name it is assigned to, if any. */
export type Lookup = (
  url: string,
  line: number,
  column: number
) => { readonly line: number; readonly column: number; readonly name: string | undefined } | undefined

/**
 * The name a function starting at `column` of `line` is assigned to: `const f = (`, `f: async (`,
 * `g = <A>(` (V8 puts an arrow function's start at its first parameter, after the paren).
 */
export const assignedName = (line: string, column: number): string | undefined =>
  /([A-Za-z_$][\w$]*)\s*(?::[^=(),]*)?[=:]\s*(?:async\s*)?(?:<[^()]*>)?\(?$/.exec(line.slice(0, column))?.[1]

/**
 * The profile with each mapped function at its original position, named when V8 had no name for
 * it. Per-line ticks (`positionTicks`, lines of the generated one-line code) are dropped where a
 * function moved: they would point at the wrong lines.
 */
export const remapProfile = (profile: CpuProfile, lookup: Lookup): { readonly profile: CpuProfile; readonly mapped: number } => {
  let mapped = 0
  const nodes = profile.nodes.map((node): ProfileNode => {
    const { url, lineNumber, columnNumber } = node.callFrame
    const original = url === "" ? undefined : lookup(url, lineNumber, columnNumber)
    if (original === undefined) return node
    mapped++
    const { positionTicks: _dropped, ...rest } = node
    const functionName = node.callFrame.functionName === "" && original.name !== undefined ? original.name : node.callFrame.functionName
    return { ...rest, callFrame: { ...node.callFrame, functionName, lineNumber: original.line, columnNumber: original.column } }
  })
  return { profile: { ...profile, nodes }, mapped }
}

/** A lookup over the maps source-map-dump.ts wrote; undefined when it wrote none. */
const readSourceMaps = (mapsFile: string): Lookup | undefined => {
  if (!existsSync(mapsFile)) return undefined
  const payloads = JSON.parse(readFileSync(mapsFile, "utf8")) as Record<string, SourceMapPayload>
  const maps = new Map(Object.entries(payloads).map(([url, payload]) => [url, new SourceMap(payload)]))
  const sources = new Map<string, ReadonlyArray<string>>()
  const sourceLine = (url: string, line: number) => {
    if (!sources.has(url)) sources.set(url, readFileSync(fileURLToPath(url), "utf8").split("\n"))
    return sources.get(url)?.[line] ?? ""
  }
  return (url, line, column) => {
    const entry = maps.get(url)?.findEntry(line, column)
    if (entry === undefined || !("originalLine" in entry)) return undefined
    return { line: entry.originalLine, column: entry.originalColumn, name: assignedName(sourceLine(url, entry.originalLine), entry.originalColumn) }
  }
}

/** A span of the profile's clock, in µs (CLOCK_MONOTONIC: `process.hrtime` / 1000 in any process). */
export interface Window {
  readonly label: string
  readonly fromUs: number
  readonly toUs: number
}

/** CLOCK_MONOTONIC in microseconds, the clock of V8's CPU profiles. */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n)

/** Each window in seconds from the profile's start, to find it on DevTools' time line. */
export const windowOffsets = (profileStartUs: number, windows: ReadonlyArray<Window>): Array<{ readonly label: string; readonly fromS: number; readonly toS: number }> =>
  windows.map((w) => ({ label: w.label, fromS: (w.fromUs - profileStartUs) / 1e6, toS: (w.toUs - profileStartUs) / 1e6 }))

export interface ProfileInfo {
  readonly file: string
  /** Call-tree nodes of project code moved to their .ts positions (0: the source maps were missing). */
  readonly mappedNodes: number
  readonly windows: ReturnType<typeof windowOffsets>
}

/** After the controller exited: its profile, rewritten with .ts positions, and where each measured window lies in it. */
export const collectProfile = (dir: string, pid: number, mapsFile: string, windows: ReadonlyArray<Window>): ProfileInfo | string => {
  const file = findProfile(dir, pid)
  if (file === undefined) return `no CPU profile of the controller (pid ${pid}) in ${dir}`
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile
  const lookup = readSourceMaps(mapsFile)
  let mappedNodes = 0
  if (lookup !== undefined) {
    const remapped = remapProfile(profile, lookup)
    writeFileSync(file, JSON.stringify(remapped.profile))
    mappedNodes = remapped.mapped
  }
  return { file, mappedNodes, windows: windowOffsets(profile.startTime, windows) }
}

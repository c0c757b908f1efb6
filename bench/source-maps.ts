/**
 * Maps positions of a CPU profile taken under tsx back to the TypeScript sources.
 *
 * tsx compiles every .ts file with esbuild (whitespace minified: the whole file is line 1 of the
 * generated code) and keeps the result, with its source map, in its cache folder
 * (`$TMPDIR/tsx-$UID/*`, JSON `{ code, map }`). A profile only has generated positions, so for each
 * source file we find the cache entry that was run: among the entries for that path (one per
 * version of the file), the one where the most profiled positions fall on the start of a function
 * (ties: the newest). Best effort: without a matching entry, positions stay unmapped.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { tmpdir, userInfo } from "node:os"
import { join } from "node:path"

interface CacheEntry {
  readonly code: string
  readonly mappings: string
  readonly mtimeMs: number
}

const isCacheJson = (u: unknown): u is { code: string; map: { mappings: string; sources: ReadonlyArray<string> } } =>
  typeof u === "object" &&
  u !== null &&
  typeof (u as { code?: unknown }).code === "string" &&
  typeof (u as { map?: { mappings?: unknown } }).map?.mappings === "string" &&
  Array.isArray((u as { map?: { sources?: unknown } }).map?.sources)

const cacheDir = (): string => {
  let uid: number | string = ""
  try {
    uid = userInfo().uid
  } catch {
    uid = ""
  }
  return join(tmpdir(), `tsx-${uid}`)
}

/** source path → every cached compilation of it. Read once. */
let index: Map<string, Array<CacheEntry>> | undefined

const loadIndex = (): Map<string, Array<CacheEntry>> => {
  if (index !== undefined) return index
  index = new Map()
  const dir = cacheDir()
  let names: Array<string> = []
  try {
    names = readdirSync(dir)
  } catch {
    return index
  }
  for (const name of names) {
    if (name.endsWith(".pipe")) continue
    try {
      const path = join(dir, name)
      const stat = statSync(path)
      if (!stat.isFile() || stat.size > 5_000_000) continue
      const json: unknown = JSON.parse(readFileSync(path, "utf8"))
      if (!isCacheJson(json) || json.map.sources.length !== 1) continue
      const source = json.map.sources[0]
      if (source === undefined) continue
      const list = index.get(source) ?? []
      list.push({ code: json.code, mappings: json.map.mappings, mtimeMs: stat.mtimeMs })
      index.set(source, list)
    } catch {
      // not a cache entry
    }
  }
  return index
}

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
const DIGIT = new Map([...BASE64].map((c, i) => [c, i]))

/** Per generated line, the segments [generatedColumn, sourceLine] (0-based), sorted by column. */
const decodeMappings = (mappings: string): Array<Array<readonly [number, number]>> => {
  const lines: Array<Array<readonly [number, number]>> = []
  let sourceLine = 0
  for (const line of mappings.split(";")) {
    const segments: Array<readonly [number, number]> = []
    let column = 0
    for (const segment of line.split(",")) {
      if (segment === "") continue
      const values: Array<number> = []
      let value = 0
      let shift = 0
      for (const char of segment) {
        const digit = DIGIT.get(char) ?? 0
        value += (digit & 31) << shift
        if ((digit & 32) !== 0) {
          shift += 5
          continue
        }
        values.push(value & 1 ? -(value >>> 1) : value >>> 1)
        value = 0
        shift = 0
      }
      column += values[0] ?? 0
      if (values.length >= 4) {
        sourceLine += values[2] ?? 0
        segments.push([column, sourceLine])
      }
    }
    lines.push(segments)
  }
  return lines
}

/** Does the generated code at `column` of line 0 look like the start of a function? */
const looksLikeFunctionStart = (code: string, offset: number): boolean =>
  /^(?:async\s*)?(?:function\b|\(|[A-Za-z_$][\w$]*\s*(?:=>|\())/.test(code.slice(offset, offset + 80))

const lineStarts = (code: string): Array<number> => {
  const starts = [0]
  for (let i = 0; i < code.length; i++) if (code.charCodeAt(i) === 10) starts.push(i + 1)
  return starts
}

export interface SourceMapper {
  /** 1-based source line of a 0-based generated position, or undefined. */
  readonly lineOf: (path: string, line: number, column: number) => number | undefined
}

/**
 * A mapper for the given profiled positions: `positions` maps a source path to the generated
 * (line, column) pairs seen in the profile, used to pick the cache entry that was run.
 */
export const makeSourceMapper = (positions: ReadonlyMap<string, ReadonlyArray<readonly [number, number]>>): SourceMapper => {
  const chosen = new Map<string, Array<Array<readonly [number, number]>> | undefined>()
  const pick = (path: string) => {
    if (chosen.has(path)) return chosen.get(path)
    const candidates = loadIndex().get(path) ?? []
    const seen = positions.get(path) ?? []
    let best: { entry: CacheEntry; score: number } | undefined
    for (const entry of candidates) {
      const starts = lineStarts(entry.code)
      let score = 0
      for (const [line, column] of seen) {
        const start = starts[line]
        if (start !== undefined && looksLikeFunctionStart(entry.code, start + column)) score++
      }
      if (best === undefined || score > best.score || (score === best.score && entry.mtimeMs > best.entry.mtimeMs)) best = { entry, score }
    }
    const decoded = best === undefined || (seen.length > 0 && best.score === 0) ? undefined : decodeMappings(best.entry.mappings)
    chosen.set(path, decoded)
    return decoded
  }
  return {
    lineOf: (path, line, column) => {
      const segments = pick(path)?.[line]
      if (segments === undefined || segments.length === 0) return undefined
      let found: number | undefined
      for (const [col, srcLine] of segments) {
        if (col > column) break
        found = srcLine
      }
      return found === undefined ? undefined : found + 1
    }
  }
}

/** The trimmed text of a source line (the file as it is now), for the report. */
export const sourceLineText = (path: string, line: number): string => {
  try {
    const text = readFileSync(path, "utf8").split("\n")[line - 1] ?? ""
    const trimmed = text.trim()
    return trimmed.length > 70 ? `${trimmed.slice(0, 67)}…` : trimmed
  } catch {
    return ""
  }
}

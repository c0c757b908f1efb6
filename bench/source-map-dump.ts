/**
 * Preloaded into the profiled controller (`--import ./bench/source-map-dump.ts`, after tsx): when the
 * process exits, writes the source maps of the project's modules it loaded to `$BENCH_SOURCE_MAPS`
 * (a JSON object, module URL → source-map payload), so that the benchmark can point the CPU
 * profile's functions at their .ts lines (profile.ts). tsx compiles each module to one line and
 * keeps its map only in memory; `module.findSourceMap` is Node's public way to read it.
 */
import { readdirSync, writeFileSync } from "node:fs"
import { findSourceMap } from "node:module"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"

const file = process.env["BENCH_SOURCE_MAPS"]
if (file !== undefined) {
  const src = resolve(import.meta.dirname, "..", "src")
  process.once("exit", () => {
    const maps: Record<string, unknown> = {}
    for (const name of readdirSync(src, { recursive: true, encoding: "utf8" })) {
      if (!name.endsWith(".ts")) continue
      const url = pathToFileURL(join(src, name)).href
      const map = findSourceMap(url)
      if (map !== undefined) maps[url] = map.payload
    }
    writeFileSync(file, JSON.stringify(maps))
  })
}

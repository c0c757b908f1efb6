/**
 * `npm run build`: src/ as plain JavaScript in dist/ (one .js and .js.map per module, the same
 * tree, the assets beside them), for `node --enable-source-maps dist/main.js` — the same program as
 * `tsx src/main.ts`, without tsx's loader in the process.
 *
 * Why: under tsx every process carries the loader's own thread (a second V8 heap) and the transformed
 * modules' inline source maps: about 60 MiB of the controller's idle RSS (docs/operations.md,
 * "Memory"). Transpiled file by file, not bundled: `import.meta.url` and the modules' relative
 * imports (`./x.js`) stay as in src/, and names stay as written.
 *
 *   tsx scripts/build.ts [OUTDIR]     (default dist)
 */
import { cpSync, readdirSync, rmSync } from "node:fs"
import { join, relative, resolve } from "node:path"
import { build } from "esbuild"

const root = resolve(import.meta.dirname, "..")
const src = join(root, "src")

/** Files of src/ that the program reads at run time, next to the module that reads them. */
const isAsset = (file: string) => file.endsWith(".html")

/** node's arguments that run a build in `outdir` (`npm run start:dist` spells the same out), `nodeArgs` before the script. */
export const runBuildArgs = (outdir: string, nodeArgs: ReadonlyArray<string> = []): Array<string> => [
  "--enable-source-maps",
  ...nodeArgs,
  join(outdir, "main.js")
]

/** Builds src/ into `outdir` (emptied first); resolves with the number of modules written. */
export const buildDist = async (outdir: string): Promise<number> => {
  rmSync(outdir, { recursive: true, force: true })
  const files = readdirSync(src, { recursive: true, encoding: "utf8" })
  const entryPoints = files.filter((file) => file.endsWith(".ts")).map((file) => join(src, file))
  await build({
    entryPoints,
    outdir,
    outbase: src,
    platform: "node",
    format: "esm",
    target: "node20",
    sourcemap: true,
    logLevel: "warning"
  })
  for (const asset of files.filter(isAsset)) cpSync(join(src, asset), join(outdir, asset))
  return entryPoints.length
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const outdir = resolve(process.argv[2] ?? join(root, "dist"))
  const started = Date.now()
  buildDist(outdir).then(
    (modules) => console.log(`built ${modules} modules into ${relative(process.cwd(), outdir) || "."}/ in ${Date.now() - started} ms`),
    (error: unknown) => {
      console.error(`build failed: ${error instanceof Error ? error.message : String(error)}`)
      process.exit(1)
    }
  )
}

import * as NodePath from "node:path"
import * as FileSystem from "@effect/platform/FileSystem"
import { Clock, Context, Effect, Layer, Option, Ref, type Stream, SubscriptionRef } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { ModelSkills } from "../domain/worker.js"

/**
 * Skills (docs/contract.md §3.2): the models this worker can serve, found on disk.
 *
 * - Under `worker.model_dir`, a model is a directory holding a `config.json` and at least one
 *   `*.safetensors`; its name is its path relative to `model_dir` with `/` separators; the walk does
 *   not descend into a model, skips hidden entries, follows directory symlinks (once per real path)
 *   and stops 8 levels deep.
 * - A Hugging Face hub cache (`worker.hf_cache_dir`, and any `models--ORG--NAME` folder met under
 *   `model_dir`) serves `models--ORG--NAME/snapshots/REV/` as `ORG/NAME`: the snapshot `refs/main`
 *   names if it is a model, else the newest (by mtime) snapshot that is one.
 * - A model's size is the sum of the bytes of every file below it, following symlinks (HF snapshots
 *   are symlinks into `../../blobs`). Its path is absolute (not resolved through symlinks).
 * - A name found in `model_dir` wins over the same name in the HF cache.
 * - A missing or unreadable folder is a logged warning (once, until it changes) and no models;
 *   a missing `model_dir` that the `synthetic` engine's built-in model stands in for is only an
 *   info line (the shipped demo has no model folder).
 * - With the `synthetic` engine and no model found, the built-in `synthetic/demo` is served, with
 *   path `builtin:synthetic/demo` (not a file: the synthetic engine needs no weights) and size 0.
 */

export const SYNTHETIC_DEMO_MODEL = "synthetic/demo"
export const SYNTHETIC_DEMO_PATH = "builtin:synthetic/demo"

export interface FoundModel {
  readonly name: string
  readonly path: string
  readonly sizeBytes: number
}

export interface ScanResult {
  readonly models: ReadonlyArray<FoundModel>
  /** Problems met on the way (unreadable folders), for the log. */
  readonly warnings: ReadonlyArray<string>
  /** Model folders that do not exist: a warning, unless the built-in model stands in. */
  readonly missing?: ReadonlyArray<string>
}

const MAX_DEPTH = 8

const reasons: Record<string, string> = {
  NotFound: "does not exist",
  PermissionDenied: "permission denied",
  BadResource: "is not readable"
}

/**
 * Why a file operation failed, in words: the platform error's reason, not its raw text
 * (`NotFound: FileSystem.stat (/x): ENOENT: no such file or directory, stat '/x'`).
 */
export const describe = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const reason = "reason" in error && typeof error.reason === "string" ? reasons[error.reason] : undefined
  if (reason !== undefined) return reason
  return "message" in error && typeof error.message === "string" ? error.message : String(error)
}

const isNotFound = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "reason" in error && error.reason === "NotFound"

interface Entry {
  readonly name: string
  readonly path: string
  readonly info: FileSystem.File.Info
}

const listEntries = (fs: FileSystem.FileSystem, dir: string) =>
  Effect.gen(function* () {
    const names = yield* fs.readDirectory(dir)
    const entries = yield* Effect.forEach(
      names.sort(),
      (name) => {
        const path = NodePath.join(dir, name)
        // `stat` follows symlinks; a dangling link is simply not an entry.
        return fs.stat(path).pipe(
          Effect.map((info): Option.Option<Entry> => Option.some({ name, path, info })),
          Effect.orElseSucceed(() => Option.none<Entry>())
        )
      },
      { concurrency: 16 }
    )
    return entries.flatMap((entry) => (Option.isSome(entry) ? [entry.value] : []))
  })

/** Sum of the bytes of every file below `dir` (symlinks followed; unreadable parts count 0). */
export const directorySize = (fs: FileSystem.FileSystem, dir: string, depth = 0): Effect.Effect<number> =>
  listEntries(fs, dir).pipe(
    Effect.flatMap((entries) =>
      Effect.forEach(entries, (entry) =>
        entry.info.type === "File"
          ? Effect.succeed(Number(entry.info.size))
          : entry.info.type === "Directory" && depth < MAX_DEPTH
            ? directorySize(fs, entry.path, depth + 1)
            : Effect.succeed(0)
      )
    ),
    Effect.map((sizes) => sizes.reduce((a, b) => a + b, 0)),
    Effect.orElseSucceed(() => 0)
  )

const isModel = (entries: ReadonlyArray<Entry>): boolean =>
  entries.some((e) => e.name === "config.json" && e.info.type === "File") &&
  entries.some((e) => e.name.endsWith(".safetensors") && e.info.type === "File")

const mtimeOf = (info: FileSystem.File.Info): number =>
  Option.match(info.mtime, { onNone: () => 0, onSome: (d) => d.getTime() })

/** `models--ORG--NAME` → `ORG/NAME` (`models--NAME` → `NAME`); anything else → none. */
export const hfRepoName = (folder: string): Option.Option<string> => {
  if (!folder.startsWith("models--")) return Option.none()
  const parts = folder.slice("models--".length).split("--").filter((p) => p.length > 0)
  return parts.length > 0 ? Option.some(parts.join("/")) : Option.none()
}

/** The snapshot of one `models--ORG--NAME` folder to serve, if any. */
const scanHfRepo = (fs: FileSystem.FileSystem, repoDir: string, name: string): Effect.Effect<Option.Option<FoundModel>> =>
  Effect.gen(function* () {
    const snapshotsDir = NodePath.join(repoDir, "snapshots")
    const snapshots = (yield* listEntries(fs, snapshotsDir)).filter((e) => e.info.type === "Directory")
    const mainRef = yield* fs.readFileString(NodePath.join(repoDir, "refs", "main")).pipe(
      Effect.map((s) => s.trim()),
      Effect.orElseSucceed(() => "")
    )
    const ordered = [...snapshots].sort((a, b) => {
      if (a.name === mainRef) return -1
      if (b.name === mainRef) return 1
      return mtimeOf(b.info) - mtimeOf(a.info) || b.name.localeCompare(a.name)
    })
    for (const snapshot of ordered) {
      const entries = yield* listEntries(fs, snapshot.path).pipe(Effect.orElseSucceed((): Array<Entry> => []))
      if (isModel(entries)) {
        const sizeBytes = yield* directorySize(fs, snapshot.path)
        return Option.some({ name, path: snapshot.path, sizeBytes })
      }
    }
    return Option.none()
  }).pipe(Effect.orElseSucceed(() => Option.none()))

/** Walks `root` for models (see the module comment). Never fails. */
export const scanModelDir = (fs: FileSystem.FileSystem, root: string): Effect.Effect<ScanResult> =>
  Effect.gen(function* () {
    const absoluteRoot = NodePath.resolve(root)
    const models: Array<FoundModel> = []
    const warnings: Array<string> = []
    const visited = new Set<string>()

    const walk = (dir: string, depth: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        const real = yield* fs.realPath(dir).pipe(Effect.orElseSucceed(() => dir))
        if (visited.has(real)) return
        visited.add(real)
        const listed = yield* Effect.either(listEntries(fs, dir))
        if (listed._tag === "Left") {
          warnings.push(`cannot read ${dir}: ${describe(listed.left)}`)
          return
        }
        const entries = listed.right
        if (dir !== absoluteRoot && isModel(entries)) {
          const sizeBytes = yield* directorySize(fs, dir)
          const name = NodePath.relative(absoluteRoot, dir).split(NodePath.sep).join("/")
          models.push({ name, path: dir, sizeBytes })
          return
        }
        if (depth >= MAX_DEPTH) return
        for (const entry of entries) {
          if (entry.info.type !== "Directory" || entry.name.startsWith(".")) continue
          const hfName = hfRepoName(entry.name)
          if (Option.isSome(hfName)) {
            const found = yield* scanHfRepo(fs, entry.path, hfName.value)
            if (Option.isSome(found)) models.push(found.value)
            continue
          }
          yield* walk(entry.path, depth + 1)
        }
      })

    const rootInfo = yield* Effect.either(fs.stat(absoluteRoot))
    if (rootInfo._tag === "Left" && isNotFound(rootInfo.left)) {
      return { models, warnings, missing: [absoluteRoot] }
    } else if (rootInfo._tag === "Left") {
      warnings.push(`model folder ${absoluteRoot} is unreadable: ${describe(rootInfo.left)}`)
    } else if (rootInfo.right.type !== "Directory") {
      warnings.push(`model folder ${absoluteRoot} is not a directory`)
    } else {
      yield* walk(absoluteRoot, 0)
    }
    return { models, warnings }
  })

/** Every `models--*` repo at the top of a Hugging Face hub cache. Never fails. */
export const scanHfCache = (fs: FileSystem.FileSystem, cacheDir: string): Effect.Effect<ScanResult> =>
  Effect.gen(function* () {
    const absolute = NodePath.resolve(cacheDir)
    const listed = yield* Effect.either(listEntries(fs, absolute))
    if (listed._tag === "Left") {
      return { models: [], warnings: [`Hugging Face cache ${absolute} is missing or unreadable: ${describe(listed.left)}`] }
    }
    const found = yield* Effect.forEach(listed.right, (entry) => {
      const name = hfRepoName(entry.name)
      return entry.info.type === "Directory" && Option.isSome(name)
        ? scanHfRepo(fs, entry.path, name.value)
        : Effect.succeed(Option.none<FoundModel>())
    })
    return { models: found.flatMap((m) => (Option.isSome(m) ? [m.value] : [])), warnings: [] }
  })

/** The skills message for what was found; the first occurrence of a name wins. */
export const skillsFrom = (
  found: ReadonlyArray<FoundModel>,
  now: number,
  options: { readonly syntheticFallback: boolean }
): ModelSkills => {
  const byName = new Map<string, FoundModel>()
  for (const model of found) if (!byName.has(model.name)) byName.set(model.name, model)
  if (byName.size === 0 && options.syntheticFallback) {
    byName.set(SYNTHETIC_DEMO_MODEL, { name: SYNTHETIC_DEMO_MODEL, path: SYNTHETIC_DEMO_PATH, sizeBytes: 0 })
  }
  const names = [...byName.keys()].sort()
  const modelPaths: Record<string, string> = {}
  const modelSizes: Record<string, number> = {}
  let totalModelSize = 0
  for (const name of names) {
    const model = byName.get(name)
    if (model === undefined) continue
    modelPaths[name] = model.path
    modelSizes[name] = model.sizeBytes
    totalModelSize += model.sizeBytes
  }
  return { availableModels: names, modelPaths, modelSizes, totalModelSize, lastScanned: now }
}

/** Same models, paths and sizes (the scan time does not count). */
export const sameSkills = (a: ModelSkills, b: ModelSkills): boolean => {
  if (a.availableModels.length !== b.availableModels.length) return false
  return a.availableModels.every(
    (name, i) =>
      b.availableModels[i] === name &&
      a.modelPaths[name] === b.modelPaths[name] &&
      a.modelSizes[name] === b.modelSizes[name]
  )
}

export interface ModelScannerService {
  /** The skills of the latest scan. */
  readonly current: Effect.Effect<ModelSkills>
  /** Scans again now; `changed` when models, paths or sizes differ from the previous scan. */
  readonly rescan: Effect.Effect<{ readonly skills: ModelSkills; readonly changed: boolean }>
  /** The current skills, then every changed set of skills. */
  readonly changes: Stream.Stream<ModelSkills>
  /** The path of a served model, if this worker serves it. */
  readonly pathOf: (model: string) => Effect.Effect<Option.Option<string>>
}

export interface ModelScannerOptions {
  readonly modelDir: string
  readonly hfCacheDir: string | null
  readonly syntheticFallback: boolean
}

export const makeModelScanner = (options: ModelScannerOptions) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const lastWarnings = yield* Ref.make("")

    const scanOnce = Effect.gen(function* () {
      const results = yield* Effect.all(
        [
          scanModelDir(fs, options.modelDir),
          options.hfCacheDir !== null
            ? scanHfCache(fs, options.hfCacheDir)
            : Effect.succeed<ScanResult>({ models: [], warnings: [] })
        ],
        { concurrency: 2 }
      )
      const found = results.flatMap((r) => r.models)
      const missing = results.flatMap((r) => r.missing ?? [])
      // The shipped demo has no model folder: the built-in model answers, which is no problem to warn about.
      const builtIn = options.syntheticFallback && found.length === 0
      const notes = builtIn ? missing.map((dir) => `model folder ${dir} does not exist: serving the built-in ${SYNTHETIC_DEMO_MODEL}`) : []
      const warnings = [
        ...(builtIn ? [] : missing.map((dir) => `model folder ${dir} does not exist`)),
        ...results.flatMap((r) => r.warnings)
      ]
      const key = [...notes, ...warnings].join("\n")
      const previous = yield* Ref.getAndSet(lastWarnings, key)
      if (key !== previous) {
        yield* Effect.forEach(notes, (n) => Effect.logInfo(n), { discard: true })
        yield* Effect.forEach(warnings, (w) => Effect.logWarning(w), { discard: true })
      }
      const now = yield* Clock.currentTimeMillis
      return skillsFrom(found, now, { syntheticFallback: options.syntheticFallback })
    }).pipe(Effect.withSpan("ModelScanner.scan"))

    const first = yield* scanOnce
    const state = yield* SubscriptionRef.make(first)
    const lastScanned = yield* Ref.make(first.lastScanned)
    const lock = yield* Effect.makeSemaphore(1)
    const current = Effect.zipWith(SubscriptionRef.get(state), Ref.get(lastScanned), (skills, at) =>
      skills.lastScanned === at ? skills : { ...skills, lastScanned: at }
    )

    const rescan = lock.withPermits(1)(
      Effect.gen(function* () {
        const next = yield* scanOnce
        const previous = yield* SubscriptionRef.get(state)
        const changed = !sameSkills(previous, next)
        yield* Ref.set(lastScanned, next.lastScanned)
        if (changed) {
          yield* SubscriptionRef.set(state, next)
          yield* Effect.logInfo(`models changed: ${next.availableModels.join(", ") || "(none)"}`)
        }
        return { skills: changed ? next : { ...previous, lastScanned: next.lastScanned }, changed }
      })
    )

    const service: ModelScannerService = {
      current,
      rescan,
      changes: state.changes,
      pathOf: (model) =>
        SubscriptionRef.get(state).pipe(Effect.map((skills) => Option.fromNullable(skills.modelPaths[model])))
    }
    return service
  })

export class ModelScanner extends Context.Tag("worker/ModelScanner")<ModelScanner, ModelScannerService>() {
  /** Scans `worker.model_dir` (and `worker.hf_cache_dir`) once at start. */
  static readonly layer: Layer.Layer<ModelScanner, never, ClusterConfigService | FileSystem.FileSystem> = Layer.effect(
    ModelScanner,
    Effect.gen(function* () {
      const config = yield* ClusterConfigService
      return yield* makeModelScanner({
        modelDir: config.worker.modelDir,
        hfCacheDir: config.worker.hfCacheDir,
        syntheticFallback: config.worker.engine.type === "synthetic"
      })
    })
  )
}

import * as Fs from "node:fs"
import * as Path from "node:path"
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Logger, Option, Schema, Stream, TestClock } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import { ModelSkills } from "../../src/domain/worker.js"
import {
  hfRepoName,
  makeModelScanner,
  ModelScanner,
  sameSkills,
  scanHfCache,
  scanModelDir,
  skillsFrom,
  SYNTHETIC_DEMO_MODEL,
  SYNTHETIC_DEMO_PATH
} from "../../src/worker/model-scanner.js"
import { makeModelFixture, tmpDir, writeBytes, writeText } from "./support/model-fixtures.js"

const withFs = <A, E, R>(f: (fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.flatMap(FileSystem.FileSystem, f).pipe(Effect.provide(NodeFileSystem.layer))

/** Collects the log messages of `effect`. */
const captureLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const logger = Logger.make(({ message, logLevel }) => {
      lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    })
    const result = yield* effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
    return { result, lines }
  })

describe("model scanning", () => {
  it.scopedLive("finds models by config.json + *.safetensors, with relative names, absolute paths and byte sizes", () =>
    Effect.gen(function* () {
      const fixture = makeModelFixture(yield* tmpDir())
      const result = yield* withFs((fs) => scanModelDir(fs, fixture.modelDir))
      expect(result.warnings).toEqual([])
      const byName = Object.fromEntries(result.models.map((m) => [m.name, { path: m.path, size: m.sizeBytes }]))
      expect(byName).toEqual({
        "mlx-community/Llama-3.2-3B-Instruct-4bit": fixture.expected["mlx-community/Llama-3.2-3B-Instruct-4bit"],
        tiny: fixture.expected["tiny"]
      })
      for (const m of result.models) expect(Path.isAbsolute(m.path)).toBe(true)
    })
  )

  it.scopedLive("reads the Hugging Face cache layout: ORG/NAME, refs/main snapshot, sizes through symlinks", () =>
    Effect.gen(function* () {
      const fixture = makeModelFixture(yield* tmpDir())
      const result = yield* withFs((fs) => scanHfCache(fs, fixture.hfCacheDir))
      const byName = Object.fromEntries(result.models.map((m) => [m.name, { path: m.path, size: m.sizeBytes }]))
      expect(byName).toEqual({ "org/hf-model": fixture.expected["org/hf-model"], solo: fixture.expected["solo"] })
    })
  )

  it.scopedLive("without refs/main the newest snapshot (by mtime) that is a model wins", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const repo = Path.join(root, "models--a--b")
      for (const [rev, size] of [["r1", 11], ["r2", 22], ["r3", 33]] as const) {
        writeText(Path.join(repo, "snapshots", rev, "config.json"), "{}")
        writeBytes(Path.join(repo, "snapshots", rev, "w.safetensors"), size)
      }
      // r3 newest by mtime but not a model
      Fs.rmSync(Path.join(repo, "snapshots", "r3", "w.safetensors"))
      const t = (s: number) => new Date(Date.now() + s * 1000)
      Fs.utimesSync(Path.join(repo, "snapshots", "r1"), t(1), t(1))
      Fs.utimesSync(Path.join(repo, "snapshots", "r2"), t(2), t(2))
      Fs.utimesSync(Path.join(repo, "snapshots", "r3"), t(3), t(3))
      const result = yield* withFs((fs) => scanHfCache(fs, root))
      expect(result.models).toEqual([{ name: "a/b", path: Path.join(repo, "snapshots", "r2"), sizeBytes: 2 + 22 }])
    })
  )

  it.scopedLive("an HF repo folder inside model_dir is served under its repo name", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const snap = Path.join(root, "cache", "models--mlx-community--Qwen", "snapshots", "abc")
      writeText(Path.join(snap, "config.json"), "{}")
      writeBytes(Path.join(snap, "model.safetensors"), 5)
      const result = yield* withFs((fs) => scanModelDir(fs, root))
      expect(result.models).toEqual([{ name: "mlx-community/Qwen", path: snap, sizeBytes: 7 }])
    })
  )

  it.scopedLive("follows directory symlinks once and survives a symlink loop and dangling links", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const elsewhere = Path.join(root, "elsewhere", "m")
      writeText(Path.join(elsewhere, "config.json"), "{}")
      writeBytes(Path.join(elsewhere, "model.safetensors"), 8)
      const models = Path.join(root, "models")
      Fs.mkdirSync(Path.join(models, "org"), { recursive: true })
      Fs.symlinkSync(elsewhere, Path.join(models, "org", "linked"))
      Fs.symlinkSync(models, Path.join(models, "loop"))
      Fs.symlinkSync(Path.join(root, "nowhere"), Path.join(models, "dangling"))
      const result = yield* withFs((fs) => scanModelDir(fs, models))
      expect(result.models.map((m) => [m.name, m.sizeBytes])).toEqual([["org/linked", 10]])
    })
  )

  it.scopedLive("a missing folder, a file instead of a folder and an unreadable HF cache give warnings, no models", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      writeText(Path.join(root, "file"), "x")
      const missing = yield* withFs((fs) => scanModelDir(fs, Path.join(root, "nope")))
      expect(missing.models).toEqual([])
      expect(missing.missing).toEqual([Path.join(root, "nope")])
      expect(missing.warnings).toEqual([])
      const file = yield* withFs((fs) => scanModelDir(fs, Path.join(root, "file")))
      expect(file.warnings[0]).toMatch(/not a directory/)
      const hf = yield* withFs((fs) => scanHfCache(fs, Path.join(root, "nope")))
      expect(hf.models).toEqual([])
      expect(hf.warnings).toEqual([`Hugging Face cache ${Path.join(root, "nope")} is missing or unreadable: does not exist`])
    })
  )

  it.scopedLive("an unreadable subfolder is skipped with a warning", () =>
    Effect.gen(function* () {
      if (process.getuid?.() === 0) {
        // root reads everything: simulate with a folder that disappears (covered by the missing case)
        return
      }
      const root = yield* tmpDir()
      const locked = Path.join(root, "locked")
      writeText(Path.join(locked, "m", "config.json"), "{}")
      Fs.chmodSync(locked, 0o000)
      const result = yield* withFs((fs) => scanModelDir(fs, root))
      Fs.chmodSync(locked, 0o755)
      expect(result.models).toEqual([])
      expect(result.warnings.join()).toMatch(/cannot read/)
    })
  )

  it("hfRepoName maps cache folder names", () => {
    expect(hfRepoName("models--mlx-community--Llama-3")).toEqual(Option.some("mlx-community/Llama-3"))
    expect(hfRepoName("models--gpt2")).toEqual(Option.some("gpt2"))
    expect(hfRepoName("models--")).toEqual(Option.none())
    expect(hfRepoName("datasets--a--b")).toEqual(Option.none())
  })

  it("skillsFrom: sorted names, first occurrence wins, totals, synthetic fallback only when empty", () => {
    const skills = skillsFrom(
      [
        { name: "b", path: "/m/b", sizeBytes: 2 },
        { name: "a", path: "/m/a", sizeBytes: 1 },
        { name: "a", path: "/hf/a", sizeBytes: 100 }
      ],
      1234,
      { syntheticFallback: true }
    )
    expect(skills).toEqual({
      availableModels: ["a", "b"],
      modelPaths: { a: "/m/a", b: "/m/b" },
      modelSizes: { a: 1, b: 2 },
      totalModelSize: 3,
      lastScanned: 1234
    })
    expect(Schema.decodeUnknownSync(ModelSkills)(skills)).toEqual(skills)
    const demo = skillsFrom([], 1, { syntheticFallback: true })
    expect(demo.availableModels).toEqual([SYNTHETIC_DEMO_MODEL])
    expect(demo.modelPaths[SYNTHETIC_DEMO_MODEL]).toBe(SYNTHETIC_DEMO_PATH)
    expect(demo.modelSizes[SYNTHETIC_DEMO_MODEL]).toBe(0)
    expect(skillsFrom([], 1, { syntheticFallback: false }).availableModels).toEqual([])
  })

  it("sameSkills ignores the scan time only", () => {
    const a = skillsFrom([{ name: "a", path: "/a", sizeBytes: 1 }], 1, { syntheticFallback: false })
    expect(sameSkills(a, { ...a, lastScanned: 99 })).toBe(true)
    expect(sameSkills(a, skillsFrom([{ name: "a", path: "/a", sizeBytes: 2 }], 1, { syntheticFallback: false }))).toBe(false)
    expect(sameSkills(a, skillsFrom([{ name: "a", path: "/b", sizeBytes: 1 }], 1, { syntheticFallback: false }))).toBe(false)
    expect(sameSkills(a, skillsFrom([], 1, { syntheticFallback: false }))).toBe(false)
  })
})

const configWith = (worker: { modelDir: string; hfCacheDir: string | null; engine?: "synthetic" | "openai" }) =>
  ClusterConfigService.layerTest((c) => ({
    ...c,
    worker: {
      ...c.worker,
      modelDir: worker.modelDir,
      hfCacheDir: worker.hfCacheDir,
      engine: { ...c.worker.engine, type: worker.engine ?? "synthetic" }
    }
  }))

const scannerFor = (worker: Parameters<typeof configWith>[0]) =>
  ModelScanner.pipe(Effect.provide(ModelScanner.layer.pipe(Layer.provide([configWith(worker), NodeFileSystem.layer]))))

describe("ModelScanner service", () => {
  it.scopedLive("scans model_dir and hf_cache_dir at start; a name in model_dir wins over the cache", () =>
    Effect.gen(function* () {
      const fixture = makeModelFixture(yield* tmpDir())
      writeText(Path.join(fixture.modelDir, "org", "hf-model", "config.json"), "{}")
      writeBytes(Path.join(fixture.modelDir, "org", "hf-model", "model.safetensors"), 1)
      const scanner = yield* scannerFor({ modelDir: fixture.modelDir, hfCacheDir: fixture.hfCacheDir })
      const skills = yield* scanner.current
      expect(skills.availableModels).toEqual([
        "mlx-community/Llama-3.2-3B-Instruct-4bit",
        "org/hf-model",
        "solo",
        "tiny"
      ])
      expect(skills.modelPaths["org/hf-model"]).toBe(Path.join(fixture.modelDir, "org", "hf-model"))
      expect(skills.modelSizes["org/hf-model"]).toBe(3)
      expect(skills.totalModelSize).toBe(
        3 +
          (fixture.expected["solo"]?.size ?? 0) +
          (fixture.expected["tiny"]?.size ?? 0) +
          (fixture.expected["mlx-community/Llama-3.2-3B-Instruct-4bit"]?.size ?? 0)
      )
      expect(skills.lastScanned).toBeGreaterThan(Date.now() - 60_000)
      expect(yield* scanner.pathOf("tiny")).toEqual(Option.some(fixture.expected["tiny"]?.path))
      expect(yield* scanner.pathOf("nope")).toEqual(Option.none())
    })
  )

  it.scopedLive("an empty folder serves synthetic/demo with the synthetic engine and nothing with another", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const synthetic = yield* scannerFor({ modelDir: root, hfCacheDir: null })
      expect((yield* synthetic.current).availableModels).toEqual([SYNTHETIC_DEMO_MODEL])
      expect(yield* synthetic.pathOf(SYNTHETIC_DEMO_MODEL)).toEqual(Option.some(SYNTHETIC_DEMO_PATH))
      const openai = yield* scannerFor({ modelDir: root, hfCacheDir: null, engine: "openai" })
      expect((yield* openai.current).availableModels).toEqual([])
    })
  )

  it.scoped("rescan reports changes and publishes them on `changes`; unchanged scans only move lastScanned", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const modelDir = Path.join(root, "models")
      Fs.mkdirSync(modelDir)
      const scanner = yield* makeModelScanner({ modelDir, hfCacheDir: null, syntheticFallback: false }).pipe(
        Effect.provide(NodeFileSystem.layer)
      )
      const seen = yield* scanner.changes.pipe(Stream.take(2), Stream.runCollect, Effect.fork)
      const first = yield* scanner.rescan
      expect(first.changed).toBe(false)
      writeText(Path.join(modelDir, "new", "config.json"), "{}")
      writeBytes(Path.join(modelDir, "new", "w.safetensors"), 3)
      const second = yield* scanner.rescan
      expect(second.changed).toBe(true)
      expect(second.skills.availableModels).toEqual(["new"])
      const emitted = Chunk.toReadonlyArray(yield* Fiber.join(seen))
      expect(emitted.map((s) => s.availableModels)).toEqual([[], ["new"]])
      const before = (yield* scanner.current).lastScanned
      yield* TestClock.adjust("5 millis")
      const third = yield* scanner.rescan
      expect(third.changed).toBe(false)
      expect((yield* scanner.current).lastScanned).toBeGreaterThan(before)
    })
  )

  it.scopedLive("a missing folder is a warning (logged once while it stays missing), never a failure", () =>
    Effect.gen(function* () {
      const root = yield* tmpDir()
      const modelDir = Path.join(root, "later")
      const { result: scanner, lines } = yield* captureLogs(
        makeModelScanner({ modelDir, hfCacheDir: Path.join(root, "no-hub"), syntheticFallback: false }).pipe(
          Effect.provide(NodeFileSystem.layer)
        )
      )
      expect(lines.filter((l) => l.startsWith("WARN"))).toEqual([
        `WARN model folder ${modelDir} does not exist`,
        `WARN Hugging Face cache ${Path.join(root, "no-hub")} is missing or unreadable: does not exist`
      ])
      const again = yield* captureLogs(scanner.rescan)
      expect(again.lines.filter((l) => l.startsWith("WARN"))).toEqual([])
      writeText(Path.join(modelDir, "m", "config.json"), "{}")
      writeBytes(Path.join(modelDir, "m", "w.safetensors"), 1)
      const fixed = yield* captureLogs(scanner.rescan)
      expect(fixed.result.skills.availableModels).toEqual(["m"])
      expect(fixed.lines.filter((l) => l.startsWith("WARN")).length).toBe(1) // only the hub one, re-stated
    })
  )

  it.scopedLive("with the synthetic engine, a missing model folder is one info line naming the built-in model, no warning", () =>
    Effect.gen(function* () {
      const modelDir = Path.join(yield* tmpDir(), "models")
      const { result: scanner, lines } = yield* captureLogs(
        makeModelScanner({ modelDir, hfCacheDir: null, syntheticFallback: true }).pipe(Effect.provide(NodeFileSystem.layer))
      )
      expect(lines).toEqual([`INFO model folder ${modelDir} does not exist: serving the built-in ${SYNTHETIC_DEMO_MODEL}`])
      expect((yield* scanner.current).availableModels).toEqual([SYNTHETIC_DEMO_MODEL])
    })
  )
})

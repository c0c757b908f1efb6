import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either, Redacted, Schema } from "effect"
import type { CliFlags } from "../../src/config/cli-flags.js"
import { ConfigError, knownKeysAt, unknownKeys } from "../../src/config/config-messages.js"
import { type ConfigLoaded, decodeConfig, loadConfig, type LoadConfigOptions, parseConfigYaml } from "../../src/config/load-config.js"
import type { Env } from "../../src/config/overrides.js"
import { ConfigFile, defaultClusterConfig } from "../../src/config/schema.js"

const repoRoot = fileURLToPath(new URL("../..", import.meta.url))
const HOME = "/home/tester"

let dir = ""
/** Writes `text` to `name` under the test's temp folder and gives its absolute path. */
const write = (name: string, text: string): string => {
  const path = join(dir, name)
  mkdirSync(join(path, ".."), { recursive: true })
  writeFileSync(path, text)
  return path
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "load-config-"))
})
afterAll(() => {
  rmSync(dir, { recursive: true, force: true })
})

const load = (argv: ReadonlyArray<string>, env: Env = {}, options: LoadConfigOptions = {}) =>
  loadConfig(argv, env, { cwd: dir, homeDir: HOME, ...options }).pipe(
    Effect.flatMap((result) =>
      result._tag === "Loaded" ? Effect.succeed(result) : Effect.dieMessage("expected a config, got help")
    )
  )

const loadError = (argv: ReadonlyArray<string>, env: Env = {}, options: LoadConfigOptions = {}) =>
  Effect.flip(loadConfig(argv, env, { cwd: dir, homeDir: HOME, ...options })).pipe(
    Effect.tap((error) =>
      Effect.sync(() => {
        expect(error).toBeInstanceOf(ConfigError)
        expect(error._tag).toBe("ConfigError")
        expect(error.message).not.toContain("\n")
      })
    )
  )

/** Writes `yaml` as the file `name` and loads it with `--config name`: the error that must come of it. */
const loadFileError = (name: string, yaml: string) =>
  Effect.suspend(() => {
    write(name, yaml)
    return loadError(["--config", name])
  })

const decodeRaw = (raw: unknown, flags: CliFlags = {}, env: Env = {}) =>
  decodeConfig({ raw, flags, env, file: "config/x.yaml", homeDir: HOME })

const nodeError = (code: string) => Object.assign(new Error(`${code}: simulated`), { code })

// -----------------------------------------------------------------------------------------------

describe("loadConfig: precedence end to end", () => {
  const fileText = `
cluster:
  mode: worker
  controller:
    port: 1111
  nats:
    server_url: nats://file:4222
  worker:
    model_dir: /file/models
    id: file-id
`
  const settings = [
    {
      name: "mode",
      get: (c: ConfigLoaded) => c.config.mode,
      flag: ["--mode", "both"],
      env: { CLUSTER_MODE: "controller" },
      expected: { default: "both", file: "worker", env: "controller", flag: "both" }
    },
    {
      name: "port",
      get: (c: ConfigLoaded) => c.config.controller.port,
      flag: ["--port=3333"],
      env: { CONTROLLER_PORT: "2222" },
      expected: { default: 8080, file: 1111, env: 2222, flag: 3333 }
    },
    {
      name: "nats url",
      get: (c: ConfigLoaded) => c.config.nats.serverUrl,
      flag: ["--nats-url", "nats://flag:4222"],
      env: { NATS_URL: "nats://env:4222" },
      expected: {
        default: "nats://127.0.0.1:4222",
        file: "nats://file:4222",
        env: "nats://env:4222",
        flag: "nats://flag:4222"
      }
    },
    {
      name: "model dir",
      get: (c: ConfigLoaded) => c.config.worker.modelDir,
      flag: ["--model-dir", "/flag/models"],
      env: { MODEL_DIR: "/env/models" },
      expected: { default: "./models", file: "/file/models", env: "/env/models", flag: "/flag/models" }
    },
    {
      name: "worker id",
      get: (c: ConfigLoaded) => c.config.worker.id,
      flag: ["--worker-id", "flag-id"],
      env: { WORKER_ID: "env-id" },
      expected: { default: null, file: "file-id", env: "env-id", flag: "flag-id" }
    }
  ] as const

  for (const s of settings) {
    it.live(`${s.name}: flag > env > file > default`, () =>
      Effect.gen(function* () {
        const path = write(`precedence-${s.name.replace(" ", "-")}.yaml`, fileText)
        const empty = join(dir, "no-default-here")
        mkdirSync(empty, { recursive: true })
        expect(s.get(yield* load([], {}, { cwd: empty }))).toBe(s.expected.default)
        expect(s.get(yield* load(["--config", path]))).toBe(s.expected.file)
        expect(s.get(yield* load(["--config", path], s.env))).toBe(s.expected.env)
        expect(s.get(yield* load(["--config", path, ...s.flag], s.env))).toBe(s.expected.flag)
        // a flag beats the file without any env too
        expect(s.get(yield* load(["--config", path, ...s.flag]))).toBe(s.expected.flag)
      }))
  }

  it.live("config file: --config beats CLUSTER_CONFIG beats config/cluster.yaml under the cwd", () =>
    Effect.gen(function* () {
      const cwd = join(dir, "precedence-config")
      mkdirSync(join(cwd, "config"), { recursive: true })
      writeFileSync(join(cwd, "config/cluster.yaml"), "cluster: { controller: { port: 1001 } }\n")
      writeFileSync(join(cwd, "env.yaml"), "cluster: { controller: { port: 1002 } }\n")
      writeFileSync(join(cwd, "flag.yaml"), "cluster: { controller: { port: 1003 } }\n")

      const byDefault = yield* load([], {}, { cwd })
      expect(byDefault.file).toBe("config/cluster.yaml")
      expect(byDefault.config.controller.port).toBe(1001)

      const byEnv = yield* load([], { CLUSTER_CONFIG: "env.yaml" }, { cwd })
      expect(byEnv.file).toBe("env.yaml")
      expect(byEnv.config.controller.port).toBe(1002)

      const byFlag = yield* load(["--config", "flag.yaml"], { CLUSTER_CONFIG: "env.yaml" }, { cwd })
      expect(byFlag.file).toBe("flag.yaml")
      expect(byFlag.config.controller.port).toBe(1003)

      const absolute = yield* load([`--config=${join(cwd, "flag.yaml")}`], {}, { cwd: "/" })
      expect(absolute.config.controller.port).toBe(1003)
    }))

  it.live("no file at the default path: the defaults, file undefined, no warnings", () =>
    Effect.gen(function* () {
      const empty = join(dir, "empty-cwd")
      mkdirSync(empty, { recursive: true })
      const result = yield* load([], {}, { cwd: empty })
      expect(result).toStrictEqual({ _tag: "Loaded", config: defaultClusterConfig(), file: undefined, warnings: [] })
    }))

  it.live("overrides apply without any file", () =>
    Effect.gen(function* () {
      const empty = join(dir, "empty-cwd-2")
      mkdirSync(empty, { recursive: true })
      const result = yield* load(["--mode", "worker"], { CONTROLLER_PORT: "9999", WORKER_ID: "w-7" }, { cwd: empty })
      expect(result.file).toBeUndefined()
      expect(result.config).toStrictEqual({
        ...defaultClusterConfig(),
        mode: "worker",
        controller: { ...defaultClusterConfig().controller, port: 9999 },
        worker: { ...defaultClusterConfig().worker, id: "w-7" }
      })
    }))

  it.effect("--help gives the usage text and reads nothing", () =>
    Effect.gen(function* () {
      const result = yield* loadConfig(["--config", "/does/not/exist.yaml", "--help"], {}, {
        readFile: () => Promise.reject(new Error("must not read"))
      })
      expect(result._tag).toBe("Help")
      if (result._tag === "Help") expect(result.text).toContain("Usage:")
    }))
})

// -----------------------------------------------------------------------------------------------

describe("the shipped config files", () => {
  it.live("config/cluster.yaml decodes without warnings and equals the defaults", () =>
    Effect.gen(function* () {
      const result = yield* load([], {}, { cwd: repoRoot })
      expect(result.file).toBe("config/cluster.yaml")
      expect(result.warnings).toStrictEqual([])
      expect(result.config).toStrictEqual(defaultClusterConfig())
    }))

  it.live("config/cluster.yaml writes every key out (decoding it strictly finds nothing unknown)", () =>
    Effect.gen(function* () {
      const { readFile } = yield* Effect.promise(() => import("node:fs/promises"))
      const text = yield* Effect.promise(() => readFile(join(repoRoot, "config/cluster.yaml"), "utf8"))
      const parsed = Either.getOrThrow(parseConfigYaml(text, "config/cluster.yaml"))
      // Every key the schema knows, at every level, is written out with its default, except
      // credentials (set per cluster) and the hardware overrides (empty: the detected values apply).
      const leftOut = new Set(["nats.user", "nats.pass", "nats.token", "nats.creds_file", "nats.tls", "worker.engine.openai.api_key", "worker.engine.openai.model"])
      const missing: Array<string> = []
      const walk = (path: ReadonlyArray<string>, value: unknown): void => {
        if (typeof value !== "object" || value === null || Array.isArray(value) || path.join(".") === "cluster.worker.hardware") return
        for (const key of knownKeysAt(path)) {
          const name = [...path.slice(1), key].join(".")
          if (!(key in value) && !leftOut.has(name)) missing.push(name)
        }
        for (const [key, child] of Object.entries(value)) walk([...path, key], child)
      }
      walk([], parsed.raw)
      expect(missing).toStrictEqual([])
      expect(knownKeysAt(["cluster", "controller", "api"])).toContain("max_buffered_bytes")
      expect(Schema.decodeUnknownEither(ConfigFile)(parsed.raw, { onExcessProperty: "error" })._tag).toBe("Right")
    }))

  it.live("config/examples/controller.yaml: a controller on external NATS", () =>
    Effect.gen(function* () {
      const result = yield* load(["--config", "config/examples/controller.yaml"], {}, { cwd: repoRoot })
      expect(result.warnings).toStrictEqual([])
      expect(result.config.mode).toBe("controller")
      expect(result.config.nats.mode).toBe("external")
      expect(result.config.controller.api.apiKeys.map(Redacted.value)).toStrictEqual(["change-me-please"])
    }))

  it.live("config/examples/worker.yaml: an mlx-lm worker whose ~/models is expanded", () =>
    Effect.gen(function* () {
      const result = yield* load(["--config", "config/examples/worker.yaml"], {}, { cwd: repoRoot })
      expect(result.warnings).toStrictEqual([])
      expect(result.config.mode).toBe("worker")
      expect(result.config.nats.mode).toBe("external")
      expect(result.config.worker.engine.type).toBe("mlx-lm")
      expect(result.config.worker.modelDir).toBe(`${HOME}/models`)
      expect(result.config.worker.hfCacheDir).toBe(`${HOME}/.cache/huggingface/hub`)
    }))
})

// -----------------------------------------------------------------------------------------------

describe("loadConfig: errors name the source and the key in one line", () => {
  it.live("unknown mode (the contract's example)", () =>
    Effect.gen(function* () {
      const error = yield* loadFileError("config/bad.yaml", "cluster:\n  mode: boss\n")
      expect(error.message).toBe('config/bad.yaml: cluster.mode: expected "controller" | "worker" | "both", got "boss"')
      expect(error.file).toBe("config/bad.yaml")
      expect(error.keyPath).toBe("cluster.mode")
    }))

  it.live("wrong type", () =>
    Effect.gen(function* () {
      const error = yield* loadFileError("wrong-type.yaml", 'cluster:\n  controller:\n    port: "8080"\n')
      expect(error.message).toBe('wrong-type.yaml: cluster.controller.port: expected number, got "8080"')
      expect((yield* loadFileError("wrong-type-2.yaml", "cluster:\n  controller:\n    api:\n      cors_enabled: yes-please\n")).message).toBe(
        'wrong-type-2.yaml: cluster.controller.api.cors_enabled: expected boolean, got "yes-please"'
      )
    }))

  it.live("negative timeout", () =>
    Effect.gen(function* () {
      expect((yield* loadFileError("negative.yaml", "cluster:\n  controller:\n    request_timeout_ms: -5\n")).message).toBe(
        "negative.yaml: cluster.controller.request_timeout_ms: expected a positive number, got -5"
      )
      expect((yield* loadFileError("negative-2.yaml", "cluster:\n  worker:\n    drain_timeout_ms: -1\n")).message).toBe(
        "negative-2.yaml: cluster.worker.drain_timeout_ms: expected a non-negative number, got -1"
      )
    }))

  it.live("invalid YAML syntax names the line", () =>
    Effect.gen(function* () {
      const error = yield* loadFileError("syntax.yaml", "cluster:\n  mode: both\n  controller:\n    port: [8080\n  nats: {}\n")
      expect(error.message).toMatch(/^syntax\.yaml: invalid YAML at line \d+, column \d+: .+/)
      expect(error.keyPath).toBeUndefined()
      expect((yield* loadFileError("syntax-2.yaml", "cluster:\n  mode: both\n   port: 1\n")).message).toBe(
        "syntax-2.yaml: invalid YAML at line 2, column 9: Nested mappings are not allowed in compact mappings"
      )
      expect((yield* loadFileError("duplicate.yaml", "cluster:\n  mode: both\n  mode: worker\n")).message).toBe(
        "duplicate.yaml: invalid YAML at line 3, column 3: Map keys must be unique"
      )
    }))

  it.live("explicitly named file missing: an error, whether named by flag or variable", () =>
    Effect.gen(function* () {
      const byFlag = yield* loadError(["--config", "nowhere.yaml"])
      expect(byFlag.message).toBe("nowhere.yaml: cannot read the config file (named by --config): no such file")
      expect(byFlag.file).toBe("nowhere.yaml")
      const byEnv = yield* loadError([], { CLUSTER_CONFIG: "nowhere.yaml" })
      expect(byEnv.message).toBe("nowhere.yaml: cannot read the config file (named by CLUSTER_CONFIG): no such file")
    }))

  it.live("unreadable file: a directory", () =>
    Effect.gen(function* () {
      mkdirSync(join(dir, "a-directory.yaml"), { recursive: true })
      expect((yield* loadError(["--config", "a-directory.yaml"])).message).toBe(
        "a-directory.yaml: cannot read the config file (named by --config): is a directory, not a file"
      )
      // at the default path, too: only a missing default file falls back to the defaults
      const cwd = join(dir, "default-is-dir")
      mkdirSync(join(cwd, "config/cluster.yaml"), { recursive: true })
      expect((yield* loadError([], {}, { cwd })).message).toBe(
        "config/cluster.yaml: cannot read the config file: is a directory, not a file"
      )
    }))

  it.effect("unreadable file: permission denied, and other read failures", () =>
    Effect.gen(function* () {
      const denied = { readFile: () => Promise.reject(nodeError("EACCES")) }
      expect((yield* loadError(["--config", "secret.yaml"], {}, denied)).message).toBe(
        "secret.yaml: cannot read the config file (named by --config): permission denied"
      )
      expect((yield* loadError([], {}, denied)).message).toBe(
        "config/cluster.yaml: cannot read the config file: permission denied"
      )
      const eperm = { readFile: () => Promise.reject(nodeError("EPERM")) }
      expect((yield* loadError(["--config", "x.yaml"], {}, eperm)).message).toContain("permission denied")
      const eio = { readFile: () => Promise.reject(nodeError("EIO")) }
      expect((yield* loadError(["--config", "x.yaml"], {}, eio)).message).toBe(
        "x.yaml: cannot read the config file (named by --config): EIO: simulated"
      )
      const odd = { readFile: () => Promise.reject("not an Error") }
      expect((yield* loadError(["--config", "x.yaml"], {}, odd)).message).toBe(
        "x.yaml: cannot read the config file (named by --config): not an Error"
      )
    }))

  it.live("top level not a mapping", () =>
    Effect.gen(function* () {
      const list = yield* loadFileError("list.yaml", "- cluster\n- mode\n")
      expect(list.message).toBe('list.yaml: top level: expected a mapping with a "cluster:" key, got a list')
      expect(list.keyPath).toBe("")
      expect((yield* loadFileError("scalar.yaml", "just some text\n")).message).toBe(
        'scalar.yaml: top level: expected a mapping with a "cluster:" key, got string "just some text"'
      )
    }))

  it.live("a section that is not a mapping", () =>
    Effect.gen(function* () {
      write("section.yaml", "cluster:\n  controller: 8080\n")
      const error = yield* loadError(["--config", "section.yaml", "--port", "80"])
      expect(error.message).toBe("section.yaml: cluster.controller: expected a mapping, got 8080")
    }))

  it.live("a bad flag or variable value is reported like a bad file value, naming the flag or variable", () =>
    Effect.gen(function* () {
      const path = write("fine.yaml", "cluster:\n  mode: both\n")
      const port = yield* loadError(["--config", path, "--port", "abc"], { CONTROLLER_PORT: "80" })
      expect(port.message).toBe('--port: cluster.controller.port: expected number, got "abc"')
      expect(port.file).toBe(path)
      expect(port.keyPath).toBe("cluster.controller.port")
      expect((yield* loadError(["--config", path], { CONTROLLER_PORT: "70000" })).message).toBe(
        "CONTROLLER_PORT: cluster.controller.port: expected a number between 0 and 65535, got 70000"
      )
      expect((yield* loadError(["--config", path], { CLUSTER_MODE: "boss" })).message).toBe(
        'CLUSTER_MODE: cluster.mode: expected "controller" | "worker" | "both", got "boss"'
      )
      expect((yield* loadError(["--config", path, "--worker-id", "a.b"])).message).toBe(
        '--worker-id: cluster.worker.id: a worker id may hold only letters, digits, "-" and "_", got "a.b"'
      )
    }))

  it.effect("a bad command line is a ConfigError too", () =>
    Effect.gen(function* () {
      const error = yield* loadError(["--prot", "80"])
      expect(error.message).toBe('command line: unknown flag "--prot" (see --help)')
      expect(error.file).toBeUndefined()
    }))
})

// -----------------------------------------------------------------------------------------------

describe("warnings, nulls and ~", () => {
  it.live("unknown keys are warnings with a guess, not failures", () =>
    Effect.gen(function* () {
      write(
        "typos.yaml",
        [
          "cluster:",
          "  controller:",
          "    prot: 9000",
          "    api:",
          "      cors_enabeld: false",
          "  workre: {}",
          "  nats:",
          "    tls: { ca_file: ca.pem, zzz: 1 }",
          "mode: worker",
          ""
        ].join("\n")
      )
      const result = yield* load(["--config", "typos.yaml"])
      expect(result.config.controller.port).toBe(8080)
      expect([...result.warnings].sort()).toStrictEqual(
        [
          'typos.yaml: cluster.controller.prot: unknown key, ignored (did you mean "port"?)',
          'typos.yaml: cluster.controller.api.cors_enabeld: unknown key, ignored (did you mean "cors_enabled"?)',
          'typos.yaml: cluster.workre: unknown key, ignored (did you mean "worker"?)',
          "typos.yaml: cluster.nats.tls.zzz: unknown key, ignored",
          "typos.yaml: mode: unknown key, ignored"
        ].sort()
      )
    }))

  it.effect("unknownKeys: nothing for a known config, even one with nulls", () =>
    Effect.sync(() => {
      expect(unknownKeys({}, "f")).toStrictEqual([])
      expect(unknownKeys({ cluster: { worker: { id: null } } }, "f")).toStrictEqual([])
      expect(unknownKeys({ cluster: { controller: { port: 1, prt: null } } }, "f")).toStrictEqual([
        'f: cluster.controller.prt: unknown key, ignored (did you mean "port"?)'
      ])
    }))

  it.live("YAML warnings are passed on", () =>
    Effect.gen(function* () {
      write("tagged.yaml", "cluster:\n  mode: !fancy worker\n")
      const result = yield* load(["--config", "tagged.yaml"])
      expect(result.config.mode).toBe("worker")
      expect(result.warnings).toStrictEqual(["tagged.yaml: line 2: Unresolved tag: !fancy"])
    }))

  it.live("an empty file, a comment-only file and `cluster:` alone give the defaults", () =>
    Effect.gen(function* () {
      for (const [name, text] of [
        ["empty.yaml", ""],
        ["comments.yaml", "# nothing here\n"],
        ["bare.yaml", "cluster:\n"]
      ] as const) {
        write(name, text)
        const result = yield* load(["--config", name])
        expect(result.file).toBe(name)
        expect(result.config).toStrictEqual(defaultClusterConfig())
      }
    }))

  it.effect("a key without a value takes its default; a null inside a list is an error", () =>
    Effect.sync(() => {
      const decoded = Either.getOrThrow(decodeRaw({ cluster: { controller: { port: null, api: null } } }))
      expect(decoded.config.controller).toStrictEqual(defaultClusterConfig().controller)
      const error = decodeRaw({ cluster: { worker: { tags: ["a", null] } } })
      expect(Either.isLeft(error) && error.left.message).toBe("config/x.yaml: cluster.worker.tags[1]: expected string, got null")
    }))

  it.effect("MODEL_DIR=~/m is expanded too", () =>
    Effect.sync(() => {
      const decoded = Either.getOrThrow(decodeRaw({}, {}, { MODEL_DIR: "~/m" }))
      expect(decoded.config.worker.modelDir).toBe(`${HOME}/m`)
    }))
})

describe("parseConfigYaml", () => {
  it.effect("parseConfigYaml: an alias to nothing is invalid YAML", () =>
    Effect.sync(() => {
      const result = parseConfigYaml("cluster: *nothing\n", "alias.yaml")
      expect(Either.isLeft(result) && result.left.message).toMatch(/^alias\.yaml: invalid YAML/)
    }))
})

describe("the bus and registration keys", () => {
  it.live("decode allowed_workers, worker_overrides (snake_case inside), the caps, state_dir and the credential paths", () =>
    Effect.gen(function* () {
      const path = write(
        "bus.yaml",
        [
          "cluster:",
          "  state_dir: ~/mlx-cluster/state",
          "  controller:",
          "    allowed_workers: [studio-1, mini_2]",
          "    worker_overrides:",
          "      studio-1: { priority: 10, max_concurrent: 2, tags: [big], hardware: { gpu_memory_gb: 144 } }",
          "  nats:",
          "    credentials_file: ~/mlx-cluster/nats-credentials.json",
          "    server_config: ~/mlx-cluster/nats/nats-server.conf",
          "  discovery: { max_workers: 8, max_models_per_worker: 50 }",
          ""
        ].join("\n")
      )
      const { config, warnings } = yield* load(["--config", path])
      expect(warnings).toStrictEqual([])
      expect(config.stateDir).toBe(`${HOME}/mlx-cluster/state`)
      expect(config.controller.allowedWorkers).toStrictEqual(["studio-1", "mini_2"])
      expect(config.controller.workerOverrides).toStrictEqual({
        "studio-1": { priority: 10, maxConcurrent: 2, tags: ["big"], hardware: { gpuMemoryGB: 144 } }
      })
      expect(config.nats.credentialsFile).toBe(`${HOME}/mlx-cluster/nats-credentials.json`)
      expect(config.nats.serverConfig).toBe(`${HOME}/mlx-cluster/nats/nats-server.conf`)
      expect([config.discovery.maxWorkers, config.discovery.maxModelsPerWorker]).toStrictEqual([8, 50])
    }))

  it.live("a bad worker id in allowed_workers or worker_overrides names the key", () =>
    Effect.gen(function* () {
      const listed = write("bad-allowed.yaml", "cluster:\n  controller:\n    allowed_workers: [ok, 'bad.id']\n")
      expect((yield* loadError(["--config", listed])).message).toBe(
        `${listed}: cluster.controller.allowed_workers[1]: a worker id may hold only letters, digits, "-" and "_", got "bad.id"`
      )
      const zero = write("bad-cap.yaml", "cluster:\n  discovery:\n    max_workers: 0\n")
      expect((yield* loadError(["--config", zero])).keyPath).toBe("cluster.discovery.max_workers")
      const override = write("bad-override.yaml", "cluster:\n  controller:\n    worker_overrides:\n      w1: { max_concurrent: -1 }\n")
      expect((yield* loadError(["--config", override])).keyPath).toBe("cluster.controller.worker_overrides.w1.max_concurrent")
    }))
})

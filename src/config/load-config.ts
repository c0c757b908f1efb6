import { readFile as nodeReadFile } from "node:fs/promises"
import { homedir } from "node:os"
import { isAbsolute, resolve } from "node:path"
import { Data, Effect, Either, Option, ParseResult, Schema } from "effect"
import YAML from "yaml"
import { type CliFlags, parseCliFlags } from "./cli-flags.js"
import { type ClusterConfig, ConfigFile } from "./schema.js"

/**
 * Loading the one configuration of a process (CONTRACT §1-2): command-line flags beat environment
 * variables, which beat the YAML file, which beats the schema's defaults. Flags and variables are
 * laid over the raw YAML object (snake_case, before decoding) by `applyOverrides`, and the result is
 * decoded once with `ConfigFile`, so every bad value, wherever it came from, is reported the same way.
 */

/** A configuration that cannot be used. `message` is one line naming the source and the key. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly message: string
  /** The config file involved, as it was named; undefined when the problem is not in a file. */
  readonly file: string | undefined
  /** The key in YAML spelling, e.g. `cluster.controller.port`; undefined when there is none. */
  readonly keyPath: string | undefined
}> {}

export type Env = Readonly<Record<string, string | undefined>>

export const DEFAULT_CONFIG_PATH = "config/cluster.yaml"

/** The environment variables of CONTRACT §1, by what they override. */
export const EnvVars = {
  config: "CLUSTER_CONFIG",
  mode: "CLUSTER_MODE",
  port: "CONTROLLER_PORT",
  natsUrl: "NATS_URL",
  modelDir: "MODEL_DIR",
  workerId: "WORKER_ID"
} as const satisfies Record<keyof CliFlags, string>

interface Overridable {
  readonly field: Exclude<keyof CliFlags, "config">
  readonly flag: string
  readonly path: ReadonlyArray<string>
  readonly numeric: boolean
}

/** The settings a flag or variable may override, with their place in the YAML file. */
const overridables: ReadonlyArray<Overridable> = [
  { field: "mode", flag: "--mode", path: ["cluster", "mode"], numeric: false },
  { field: "port", flag: "--port", path: ["cluster", "controller", "port"], numeric: true },
  { field: "natsUrl", flag: "--nats-url", path: ["cluster", "nats", "server_url"], numeric: false },
  { field: "modelDir", flag: "--model-dir", path: ["cluster", "worker", "model_dir"], numeric: false },
  { field: "workerId", flag: "--worker-id", path: ["cluster", "worker", "id"], numeric: false }
]

/** Paths whose leading `~` is replaced by the home directory. */
const homePaths: ReadonlyArray<ReadonlyArray<string>> = [
  ["cluster", "worker", "model_dir"],
  ["cluster", "worker", "hf_cache_dir"],
  ["cluster", "nats", "creds_file"],
  ["cluster", "nats", "credentials_file"],
  ["cluster", "nats", "server_config"],
  ["cluster", "state_dir"],
  ["cluster", "worker", "engine", "mlx_lm", "python"],
  ["cluster", "nats", "tls", "ca_file"],
  ["cluster", "nats", "tls", "cert_file"],
  ["cluster", "nats", "tls", "key_file"]
]

type Mapping = Readonly<Record<string, unknown>>

const isMapping = (u: unknown): u is Mapping => typeof u === "object" && u !== null && !Array.isArray(u)

/** An environment variable counts only when it is set and not empty. */
const envValue = (env: Env, name: string): string | undefined => {
  const value = env[name]
  return value === undefined || value === "" ? undefined : value
}

/** `"8080"` → 8080; anything that is not a plain decimal number stays a string for the schema to reject. */
const numericOrString = (value: string): number | string =>
  /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(value) ? Number(value) : value

/**
 * `raw` with `value` at `path`, copying the mappings on the way; missing or null mappings are
 * created. When something on the way is not a mapping the input is returned unchanged, so that the
 * schema reports the file's own value.
 */
const setIn = (raw: unknown, path: ReadonlyArray<string>, value: unknown): Option.Option<unknown> => {
  const [head, ...rest] = path
  if (head === undefined) return Option.some(value)
  const base: Mapping | undefined = raw === undefined || raw === null ? {} : isMapping(raw) ? raw : undefined
  if (base === undefined) return Option.none()
  return Option.map(setIn(base[head], rest, value), (child) => ({ ...base, [head]: child }))
}

const getIn = (raw: unknown, path: ReadonlyArray<string>): unknown =>
  path.reduce<unknown>((node, key) => (isMapping(node) ? node[key] : undefined), raw)

export interface Overridden {
  /** The raw config with the overrides laid over it. */
  readonly raw: unknown
  /** Key path in YAML spelling (`cluster.controller.port`) → the flag or variable that set it. */
  readonly sources: ReadonlyMap<string, string>
}

/**
 * Lays flags and environment variables over the raw (snake_case, not yet decoded) YAML object:
 * for each setting a flag beats its variable, which beats the file's value; an empty variable counts
 * as unset. `--port`/`CONTROLLER_PORT` become numbers when they look like one. Pure: `raw` is not
 * modified. (`--config`/`CLUSTER_CONFIG` choose the file itself: see `configPathFrom`.)
 */
export const applyOverrides = (raw: unknown, flags: CliFlags, env: Env): Overridden => {
  const sources = new Map<string, string>()
  let result = raw
  for (const o of overridables) {
    const fromFlag = flags[o.field]
    const fromEnv = envValue(env, EnvVars[o.field])
    const chosen =
      fromFlag !== undefined
        ? { value: fromFlag, source: o.flag }
        : fromEnv !== undefined
          ? { value: fromEnv, source: EnvVars[o.field] }
          : undefined
    if (chosen === undefined) continue
    const value = o.numeric ? numericOrString(chosen.value) : chosen.value
    const next = setIn(result, o.path, value)
    if (Option.isSome(next)) {
      result = next.value
      sources.set(o.path.join("."), chosen.source)
    }
  }
  return { raw: result, sources }
}

/** Where the config file comes from: `--config`, then `CLUSTER_CONFIG`, then the default path. */
export const configPathFrom = (
  flags: CliFlags,
  env: Env
): { readonly path: string; readonly source: "--config" | typeof EnvVars.config | "default" } => {
  if (flags.config !== undefined) return { path: flags.config, source: "--config" }
  const fromEnv = envValue(env, EnvVars.config)
  if (fromEnv !== undefined) return { path: fromEnv, source: EnvVars.config }
  return { path: DEFAULT_CONFIG_PATH, source: "default" }
}

/**
 * Removes mapping entries whose value is YAML null (`port:` with nothing after it), so that they take
 * their default, like an absent key. Nulls inside lists stay, for the schema to reject.
 */
export const dropNulls = (raw: unknown): unknown => {
  if (Array.isArray(raw)) return raw.map(dropNulls)
  if (!isMapping(raw)) return raw
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(raw)) {
    if (v !== null) out[k] = dropNulls(v)
  }
  return out
}

/** Replaces a leading `~` in the path-valued settings with `home`. */
export const expandHome = (raw: unknown, home: string): unknown =>
  homePaths.reduce<unknown>((acc, path) => {
    const value = getIn(acc, path)
    if (typeof value !== "string" || !(value === "~" || value.startsWith("~/"))) return acc
    return Option.getOrElse(setIn(acc, path, home + value.slice(1)), () => acc)
  }, raw)

// ---------------------------------------------------------------------------------------------
// Messages

/** `["cluster", "controller", "api", "api_keys", 0]` → `cluster.controller.api.api_keys[0]`. */
export const formatKeyPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((acc, key) => {
    if (typeof key === "number") return `${acc}[${key}]`
    const name = String(key)
    return acc === "" ? name : `${acc}.${name}`
  }, "")

const samePath = (a: ReadonlyArray<PropertyKey>, b: ReadonlyArray<PropertyKey>) =>
  a.length === b.length && a.every((k, i) => k === b[i])

const humanise = (expected: string): string =>
  expected
    .replace(/^Struct \(Encoded side\)$/, "a mapping")
    .replace(/^Struct \(Type side\)$/, "a mapping")
    .replace(/^ReadonlyArray<(.+)>$/, "a list of $1")

const clip = (text: string, max = 80): string => (text.length <= max ? text : `${text.slice(0, max - 1)}…`)

/**
 * The first problem of a decode failure, in one line: its key path and `expected X | Y, got Z`.
 * The alternatives of a union at the same key are merged; the `undefined` alternative that every
 * optional key carries is left out.
 */
export const describeParseError = (
  error: ParseResult.ParseError
): { readonly keyPath: string; readonly problem: string } => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const first = issues[0]
  if (first === undefined) return { keyPath: "", problem: error.message.split("\n")[0] ?? "invalid" }
  const here = issues.filter((issue) => samePath(issue.path, first.path))
  const expected: Array<string> = []
  // Messages a schema writes itself (a refinement's `message` annotation) say more than "null".
  const custom: Array<string> = []
  let actual: string | undefined
  for (const issue of here) {
    const match = /^Expected (.+), actual (.+)$/s.exec(issue.message)
    if (match === null) {
      if (!custom.includes(issue.message)) custom.push(issue.message)
      continue
    }
    const [, what = "", got = ""] = match
    actual ??= got
    const text = humanise(what)
    if (what !== "undefined" && !expected.includes(text)) expected.push(text)
  }
  const keyPath = formatKeyPath(first.path)
  const problem =
    custom.length > 0 && actual !== undefined
      ? `${custom.join(" | ")}, got ${clip(actual)}`
      : actual !== undefined && expected.length > 0
        ? `expected ${expected.join(" | ")}, got ${clip(actual)}`
        : first.message
  return { keyPath, problem }
}

const editDistance = (a: string, b: string): number => {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost)
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

/** The known key closest to `name`, when it is close enough to be a likely typo. */
const suggestion = (name: string, known: ReadonlyArray<string>): string | undefined => {
  let best: { key: string; distance: number } | undefined
  for (const key of known) {
    const distance = editDistance(name.toLowerCase(), key)
    if (best === undefined || distance < best.distance) best = { key, distance }
  }
  return best !== undefined && best.distance <= Math.max(2, Math.floor(name.length / 3)) ? best.key : undefined
}

/**
 * Keys present in `raw` that the schema does not know, as one warning line each (with a "did you
 * mean" when a known key is close). Such keys are ignored by the decode; listing them makes typos
 * such as `prot: 9000` visible.
 */
export const unknownKeys = (raw: unknown, label: string): ReadonlyArray<string> => {
  const result = Schema.decodeUnknownEither(ConfigFile)(raw, { errors: "all", onExcessProperty: "error" })
  if (Either.isRight(result)) return []
  const warnings: Array<string> = []
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(result.left)) {
    if (issue._tag !== "Unexpected") continue
    const name = String(issue.path[issue.path.length - 1] ?? "")
    const known = Array.from(issue.message.matchAll(/"([^"]+)"/g), (m) => m[1] ?? "")
    const hint = suggestion(name, known)
    const line = `${label}: ${formatKeyPath(issue.path)}: unknown key, ignored${hint === undefined ? "" : ` (did you mean "${hint}"?)`}`
    if (!warnings.includes(line)) warnings.push(line)
  }
  return warnings
}

// ---------------------------------------------------------------------------------------------
// Parsing and decoding

/**
 * The YAML text of a config file as a raw object. An empty file is an empty mapping; invalid
 * syntax names its line; a top level that is not a mapping is refused. YAML warnings are returned.
 */
export const parseConfigYaml = (
  text: string,
  file: string
): Either.Either<{ readonly raw: Mapping; readonly warnings: ReadonlyArray<string> }, ConfigError> => {
  const fail = (message: string, keyPath?: string) =>
    Either.left(new ConfigError({ message: `${file}: ${message}`, file, keyPath }))
  const lineCounter = new YAML.LineCounter()
  const doc = YAML.parseDocument(text, { prettyErrors: false, lineCounter })
  const [syntax] = doc.errors
  if (syntax !== undefined) {
    const { line, col } = lineCounter.linePos(syntax.pos[0])
    return fail(`invalid YAML at line ${line}, column ${col}: ${syntax.message.split("\n")[0] ?? syntax.code}`)
  }
  let raw: unknown
  try {
    raw = doc.toJS()
  } catch (e) {
    return fail(`invalid YAML: ${e instanceof Error ? e.message : String(e)}`)
  }
  const warnings = doc.warnings.map(
    (w) => `${file}: line ${lineCounter.linePos(w.pos[0]).line}: ${w.message.split("\n")[0] ?? w.code}`
  )
  if (raw === null || raw === undefined) return Either.right({ raw: {}, warnings })
  if (!isMapping(raw)) {
    const got = Array.isArray(raw) ? "a list" : `${typeof raw} ${clip(JSON.stringify(raw))}`
    return fail(`top level: expected a mapping with a "cluster:" key, got ${got}`, "")
  }
  return Either.right({ raw, warnings })
}

export interface DecodeInput {
  /** The raw YAML object, without overrides. */
  readonly raw: unknown
  readonly flags: CliFlags
  readonly env: Env
  /** The file `raw` came from, as named; undefined when there is none. */
  readonly file: string | undefined
  readonly homeDir: string
}

/**
 * Applies the overrides to `raw` and decodes the result once with `ConfigFile`. A failure names
 * the source of the first bad value (the file, or the flag or variable that set it) and its key.
 * Unknown keys of the file become warnings.
 */
export const decodeConfig = (
  input: DecodeInput
): Either.Either<{ readonly config: ClusterConfig; readonly warnings: ReadonlyArray<string> }, ConfigError> => {
  const fileLabel = input.file ?? "config"
  const { raw, sources } = applyOverrides(input.raw, input.flags, input.env)
  const prepared = expandHome(dropNulls(raw), input.homeDir)
  const decoded = Schema.decodeUnknownEither(ConfigFile)(prepared)
  if (Either.isLeft(decoded)) {
    const { keyPath, problem } = describeParseError(decoded.left)
    const source = sources.get(keyPath) ?? fileLabel
    return Either.left(
      new ConfigError({ message: `${source}: ${keyPath === "" ? "top level" : keyPath}: ${problem}`, file: input.file, keyPath })
    )
  }
  return Either.right({ config: decoded.right.cluster, warnings: unknownKeys(raw, fileLabel) })
}

// ---------------------------------------------------------------------------------------------
// Loading

export interface ConfigLoaded {
  readonly _tag: "Loaded"
  readonly config: ClusterConfig
  /** The file that was read, as named; undefined when the default file is absent (defaults used). */
  readonly file: string | undefined
  /** Unknown keys and YAML warnings: to be logged, not fatal. */
  readonly warnings: ReadonlyArray<string>
}

export interface HelpRequested {
  readonly _tag: "Help"
  /** The usage text, for the caller to print. */
  readonly text: string
}

export type LoadConfigResult = ConfigLoaded | HelpRequested

export interface LoadConfigOptions {
  /** Directory that relative config paths are read from; default `process.cwd()`. */
  readonly cwd?: string
  /** Replaces a leading `~` in path settings; default `os.homedir()`. */
  readonly homeDir?: string
  /** Reads a file as UTF-8; default `fs.promises.readFile`. */
  readonly readFile?: (path: string) => Promise<string>
}

const defaultReadFile = (path: string): Promise<string> => nodeReadFile(path, "utf8")

const errorCode = (e: unknown): string | undefined =>
  typeof e === "object" && e !== null && "code" in e && typeof e.code === "string" ? e.code : undefined

const readProblem = (e: unknown): string => {
  switch (errorCode(e)) {
    case "ENOENT":
      return "no such file"
    case "EACCES":
    case "EPERM":
      return "permission denied"
    case "EISDIR":
      return "is a directory, not a file"
    default:
      return (e instanceof Error ? e.message : String(e)).split("\n")[0] ?? "unknown error"
  }
}

/**
 * Reads the config file. Absent while only the default path names it: `None` (defaults apply).
 * Absent or unreadable when named explicitly, or unreadable at the default path: a `ConfigError`.
 */
const readConfigText = (
  file: string,
  source: string,
  options: LoadConfigOptions
): Effect.Effect<Option.Option<string>, ConfigError> => {
  const read = options.readFile ?? defaultReadFile
  const full = isAbsolute(file) ? file : resolve(options.cwd ?? process.cwd(), file)
  return Effect.tryPromise({ try: () => read(full), catch: (e) => e }).pipe(
    Effect.map(Option.some),
    Effect.catchAll((e) =>
      source === "default" && errorCode(e) === "ENOENT"
        ? Effect.succeedNone
        : Effect.fail(
            new ConfigError({
              message: `${file}: cannot read the config file${source === "default" ? "" : ` (named by ${source})`}: ${readProblem(e)}`,
              file,
              keyPath: undefined
            })
          )
    )
  )
}

/**
 * Loads the configuration of this process from its command line (`process.argv.slice(2)`) and
 * environment: parses the flags, reads the config file, lays flags and variables over it and
 * decodes it once. `--help` gives the usage text instead.
 */
export const loadConfig = (
  argv: ReadonlyArray<string>,
  env: Env,
  options: LoadConfigOptions = {}
): Effect.Effect<LoadConfigResult, ConfigError> =>
  Effect.gen(function* () {
    const command = yield* Either.mapLeft(
      parseCliFlags(argv),
      (message) => new ConfigError({ message: `command line: ${message}`, file: undefined, keyPath: undefined })
    )
    if (command._tag === "Help") return command
    const { flags } = command
    const { path, source } = configPathFrom(flags, env)
    const text = yield* readConfigText(path, source, options)
    const parsed = Option.isSome(text)
      ? yield* parseConfigYaml(text.value, path)
      : { raw: {}, warnings: [] as ReadonlyArray<string> }
    const file = Option.isSome(text) ? path : undefined
    const { config, warnings } = yield* decodeConfig({
      raw: parsed.raw,
      flags,
      env,
      file,
      homeDir: options.homeDir ?? homedir()
    })
    const loaded: ConfigLoaded = { _tag: "Loaded", config, file, warnings: [...parsed.warnings, ...warnings] }
    return loaded
  }).pipe(Effect.withSpan("Config.load"))

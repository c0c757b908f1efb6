import { readFile as nodeReadFile } from "node:fs/promises"
import { homedir } from "node:os"
import { isAbsolute, resolve } from "node:path"
import { Effect, Either, Option, Schema } from "effect"
import YAML from "yaml"
import { type CliFlags, parseCliFlags } from "./cli-flags.js"
import { clipValue, ConfigError, describeParseError, unknownKeys } from "./config-messages.js"
import { applyOverrides, configPathFrom, dropNulls, type Env, expandHome, isMapping, type Mapping } from "./overrides.js"
import { type ClusterConfig, ConfigFile } from "./schema.js"

/**
 * Loading the one configuration of a process (docs/contract.md, "Command line" and "Config file"):
 * command-line flags beat environment variables, which beat the YAML file, which beats the
 * schema's defaults. Flags and variables are laid over the raw YAML object by `applyOverrides`
 * (`overrides.ts`), and the result is decoded once with `ConfigFile`, so every bad value, wherever
 * it came from, is reported the same way (`config-messages.ts`).
 */

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
    const got = Array.isArray(raw) ? "a list" : `${typeof raw} ${clipValue(JSON.stringify(raw))}`
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

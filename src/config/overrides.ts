import { Option } from "effect"
import type { CliFlags } from "./cli-flags.js"
import { isJsonObject } from "../domain/json.js"

/**
 * Where each setting of one process comes from (docs/contract.md, "Command line" and "Config
 * file"): command-line flags beat environment variables, which beat the YAML file. The flags and
 * variables are laid over the raw YAML object (snake_case, before decoding), so that the schema
 * checks every value, wherever it came from, the same way.
 */

export type Env = Readonly<Record<string, string | undefined>>

export const DEFAULT_CONFIG_PATH = "config/cluster.yaml"

/** The environment variables of the contract, by what they override. */
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

export type Mapping = Readonly<Record<string, unknown>>

export const isMapping: (u: unknown) => u is Mapping = isJsonObject

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

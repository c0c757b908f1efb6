import { randomBytes } from "node:crypto"
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { Data, Effect, Either, Redacted, Schema } from "effect"
import type { ClusterConfig } from "../config/schema.js"
import { decodeGuarded, formatIssue, parseJson } from "../domain/decode.js"

/**
 * The NATS credentials this process's clients use. Secure by default where it costs nothing: when
 * the config names none (no `nats.user`/`pass`, `token` or `creds_file`) and this process runs the
 * embedded nats-server, a random credential is generated on the first start and kept in
 * `nats.credentials_file` (default `<state_dir>/nats-credentials.json`, mode 0600, folder 0700);
 * later starts reuse it. A process that does not embed the server (a worker on another Mac) uses
 * that file when it exists there, so copying the file is enough to join.
 *
 * The secret never goes on a command line: the embedded server reads it from a 0600 config file.
 */

export class NatsCredentialsError extends Data.TaggedError("NatsCredentialsError")<{ readonly message: string }> {}

/** The credentials file: JSON, camelCase, as the process writes it. */
export const NatsCredentialsFile = Schema.Struct({
  user: Schema.String.pipe(Schema.minLength(1)),
  password: Schema.String.pipe(Schema.minLength(1)),
  createdAt: Schema.optional(Schema.Number)
})
export type NatsCredentialsFile = typeof NatsCredentialsFile.Type

/** The user name of a generated credential. */
export const GENERATED_USER = "mlx-cluster"

export type NatsAuthSource =
  /** `nats.user`/`pass`, `token` or `creds_file` of the config. */
  | "config"
  /** Created by this start (the embedded server's first run). */
  | "generated"
  /** Read from the credentials file. */
  | "file"
  /** No credentials: the server must be open (or the connection is refused). */
  | "none"

/** The ways a client proves who it is to nats-server (none, one, or user and password). */
export interface NatsCredentialFields {
  readonly user?: string
  readonly pass?: Redacted.Redacted<string>
  readonly token?: Redacted.Redacted<string>
  readonly credsFile?: string
}

export interface EffectiveNatsAuth extends NatsCredentialFields {
  readonly source: NatsAuthSource
  /** The credentials file involved, for "generated" and "file". */
  readonly file?: string
}

/** Where the generated credential lives for this config. */
export const credentialsFilePath = (config: ClusterConfig): string =>
  config.nats.credentialsFile ?? join(config.stateDir, "nats-credentials.json")

/**
 * The process starts and owns a nats-server: `nats.mode: embedded`, except in a worker-only process
 * — unless `nats.cluster` makes its server a member of a NATS cluster (issue 14: a worker-only
 * machine may be one of the members, so that no one machine carries the bus).
 */
export const runsEmbeddedServer = (config: ClusterConfig): boolean =>
  config.nats.mode === "embedded" && (config.mode !== "worker" || config.nats.cluster !== null)

const configured = (config: ClusterConfig): EffectiveNatsAuth | undefined => {
  const { user, pass, token, credsFile } = config.nats
  if (user === undefined && token === undefined && credsFile === undefined) return undefined
  return {
    source: "config",
    ...(user === undefined ? {} : { user }),
    ...(pass === undefined ? {} : { pass }),
    ...(token === undefined ? {} : { token }),
    ...(credsFile === undefined ? {} : { credsFile })
  }
}

const errorCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" ? cause.code : undefined

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const decodeFile = decodeGuarded(NatsCredentialsFile)

/** The credential in `file`; `undefined` when there is no such file. */
export const readCredentialsFile = (file: string): Effect.Effect<NatsCredentialsFile | undefined, NatsCredentialsError> =>
  Effect.suspend(() => {
    let text: string
    try {
      text = readFileSync(file, "utf8")
    } catch (cause) {
      if (errorCode(cause) === "ENOENT") return Effect.succeed(undefined)
      return Effect.fail(new NatsCredentialsError({ message: `cannot read the NATS credentials file ${file}: ${describe(cause)}` }))
    }
    const decoded = Either.flatMap(parseJson(text), decodeFile)
    return Either.isLeft(decoded)
      ? Effect.fail(
          new NatsCredentialsError({
            message: `the NATS credentials file ${file} is not valid: ${formatIssue(decoded.left)}; delete it to generate a new one`
          })
        )
      : Effect.succeed(decoded.right)
  })

/** A 0600 file readable by others is made private again, with a warning. */
const keepPrivate = (file: string) =>
  Effect.suspend(() => {
    try {
      const mode = statSync(file).mode & 0o777
      if ((mode & 0o077) === 0) return Effect.void
      chmodSync(file, 0o600)
      return Effect.logWarning(`the NATS credentials file ${file} was readable by others (mode ${mode.toString(8)}): now 600`)
    } catch {
      return Effect.void
    }
  })

/**
 * The credential in `file`, created when missing: a random 32-character password for the user
 * `mlx-cluster`, written with mode 0600 into a folder created with mode 0700. Creation is
 * exclusive (`wx`): when two starts race, the second reads what the first wrote.
 */
export const loadOrCreateCredentials = (
  file: string
): Effect.Effect<{ readonly credentials: NatsCredentialsFile; readonly created: boolean }, NatsCredentialsError> =>
  Effect.gen(function* () {
    const existing = yield* readCredentialsFile(file)
    if (existing !== undefined) {
      yield* keepPrivate(file)
      return { credentials: existing, created: false }
    }
    const credentials: NatsCredentialsFile = {
      user: GENERATED_USER,
      password: randomBytes(24).toString("base64url"),
      createdAt: Date.now()
    }
    const written = yield* Effect.try({
      try: () => {
        mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
        writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600, flag: "wx" })
        return true
      },
      catch: (cause) => cause
    }).pipe(
      Effect.catchAll((cause) =>
        errorCode(cause) === "EEXIST"
          ? Effect.succeed(false)
          : Effect.fail(new NatsCredentialsError({ message: `cannot write the NATS credentials file ${file}: ${describe(cause)}` }))
      )
    )
    if (written) return { credentials, created: true }
    const raced = yield* readCredentialsFile(file)
    if (raced === undefined) return yield* new NatsCredentialsError({ message: `the NATS credentials file ${file} vanished` })
    return { credentials: raced, created: false }
  })

const fromFile = (source: "generated" | "file", file: string, c: NatsCredentialsFile): EffectiveNatsAuth => ({
  source,
  file,
  user: c.user,
  pass: Redacted.make(c.password)
})

/**
 * The effective NATS client credentials of this process:
 *
 * 1. the config's `nats.user`/`pass`, `token` or `creds_file` when any is set;
 * 2. else, when this process embeds the server (and `nats.server_config` does not replace the
 *    generated server config): the credentials file, created on the first start;
 * 3. else the credentials file when it exists (a worker that was given a copy);
 *    an explicitly configured `nats.credentials_file` that is missing is an error;
 * 4. else none.
 */
export const effectiveNatsAuth = (config: ClusterConfig): Effect.Effect<EffectiveNatsAuth, NatsCredentialsError> =>
  Effect.gen(function* () {
    const fromConfig = configured(config)
    if (fromConfig !== undefined) return fromConfig
    const file = credentialsFilePath(config)
    if (runsEmbeddedServer(config) && config.nats.serverConfig === null) {
      const { credentials, created } = yield* loadOrCreateCredentials(file)
      return fromFile(created ? "generated" : "file", file, credentials)
    }
    const existing = yield* readCredentialsFile(file)
    if (existing !== undefined) {
      yield* keepPrivate(file)
      return fromFile("file", file, existing)
    }
    if (config.nats.credentialsFile !== null) {
      return yield* new NatsCredentialsError({ message: `nats.credentials_file ${file}: no such file` })
    }
    const none: EffectiveNatsAuth = { source: "none" }
    return none
  })

/** `config` with the effective credentials in `nats.user`/`pass` (what the NATS clients read). */
export const withNatsAuth = (config: ClusterConfig, auth: EffectiveNatsAuth): ClusterConfig =>
  auth.source === "generated" || auth.source === "file"
    ? {
        ...config,
        nats: {
          ...config.nats,
          ...(auth.user === undefined ? {} : { user: auth.user }),
          ...(auth.pass === undefined ? {} : { pass: auth.pass })
        }
      }
    : config

/**
 * `config` with the effective credentials filled in: the one call a NATS connection layer needs
 * (`withEffectiveNatsAuth(config)` before `connectOptionsFromConfig`).
 */
export const withEffectiveNatsAuth = (config: ClusterConfig): Effect.Effect<ClusterConfig, NatsCredentialsError> =>
  Effect.map(effectiveNatsAuth(config), (auth) => withNatsAuth(config, auth))

import { Data, Deferred, Duration, Effect, Option } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import { accessSync, constants } from "node:fs"
import { delimiter, join } from "node:path"

/** The nats-server child could not be started or did not become ready. */
export class NatsServerError extends Data.TaggedError("NatsServerError")<{ readonly message: string }> {}

export const INSTALL_HINT =
  "install nats-server 2.9 or newer: `sudo apt-get install nats-server` (Debian/Ubuntu), " +
  "`brew install nats-server` (macOS), or put a release binary on PATH (or run scripts/ensure-nats-server.sh)"

const isExecutable = (path: string) => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** `nats-server` from PATH, else Debian's /usr/sbin (not on a normal user's PATH). */
export const findNatsServer = (env: NodeJS.ProcessEnv = process.env): Option.Option<string> => {
  const dirs = [...(env.PATH ?? "").split(delimiter).filter((d) => d !== ""), "/usr/sbin", "/usr/local/sbin"]
  for (const dir of dirs) {
    const candidate = join(dir, "nats-server")
    if (isExecutable(candidate)) return Option.some(candidate)
  }
  return Option.none()
}

export interface NatsServerOptions {
  readonly host: string
  readonly port: number
  /** Longest wait for "Server is ready". */
  readonly readyTimeoutMs?: number
  readonly binary?: string
  /** Extra command-line arguments, e.g. `--user`/`--pass` for an authenticated server. */
  readonly args?: ReadonlyArray<string>
}

export interface RunningNatsServer {
  readonly url: string
  readonly pid: number
  readonly process: ChildProcess
}

const stopChild = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const kill = setTimeout(() => child.kill("SIGKILL"), 5_000)
    child.once("exit", () => {
      clearTimeout(kill)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

/**
 * Starts a real `nats-server` on host:port, owned by the current scope: it is ready when the effect
 * completes and stopped (SIGTERM, then SIGKILL after 5 s) when the scope closes.
 */
export const startNatsServer = (options: NatsServerOptions) =>
  Effect.gen(function* () {
    const binary = options.binary ?? Option.getOrUndefined(findNatsServer())
    if (binary === undefined) {
      return yield* new NatsServerError({ message: `nats-server was not found on PATH or in /usr/sbin; ${INSTALL_HINT}` })
    }
    const ready = yield* Deferred.make<void, NatsServerError>()
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(binary, ["-a", options.host, "-p", String(options.port), ...(options.args ?? [])], {
          stdio: ["ignore", "ignore", "pipe"],
          // Its own process group: a Ctrl-C in the terminal reaches the whole foreground group, and
          // the server must outlive the first one, while the controller drains over it.
          detached: true
        })
      ),
      stopChild
    )
    // The scope normally stops it; this covers a `process.exit` that skips the scope.
    const onExit = () => child.kill("SIGTERM")
    process.once("exit", onExit)
    yield* Effect.addFinalizer(() => Effect.sync(() => process.off("exit", onExit)))
    let output = ""
    child.stderr?.setEncoding("utf8")
    child.stderr?.on("data", (chunk: string) => {
      if (output.length < 16_384) output += chunk
      if (output.includes("Server is ready")) Deferred.unsafeDone(ready, Effect.void)
    })
    child.once("error", (error) =>
      Deferred.unsafeDone(
        ready,
        Effect.fail(new NatsServerError({ message: `cannot run ${binary}: ${error.message}; ${INSTALL_HINT}` }))
      )
    )
    child.once("exit", (code, signal) => {
      const inUse = /address already in use/i.test(output)
      const message = inUse
        ? `port ${options.port} on ${options.host} is already taken; stop what uses it or set another nats.server_url`
        : `nats-server exited (${signal ?? `code ${code}`}) before it was ready: ${lastLine(output)}`
      Deferred.unsafeDone(ready, Effect.fail(new NatsServerError({ message })))
    })
    yield* Deferred.await(ready).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(options.readyTimeoutMs ?? 10_000),
        onTimeout: () => new NatsServerError({ message: `nats-server did not become ready: ${lastLine(output)}` })
      })
    )
    return { url: `nats://${options.host}:${options.port}`, pid: child.pid ?? -1, process: child } satisfies RunningNatsServer
  })

const lastLine = (output: string) => {
  const lines = output.trim().split("\n")
  return (lines[lines.length - 1] ?? "").replace(/^\[\d+\]\s+\S+\s+\S+\s+/, "") || "no output"
}

import { Data, Deferred, Duration, Effect, Option } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import { findExecutable, guardedCommand } from "../process/orphan-guard.js"
import { removePidFile, stopStaleChild, writePidFile } from "../process/pid-file.js"

/** The nats-server child could not be started or did not become ready. */
export class NatsServerError extends Data.TaggedError("NatsServerError")<{ readonly message: string }> {}

export const INSTALL_HINT =
  "install nats-server 2.9 or newer: `sudo apt-get install nats-server` (Debian/Ubuntu), " +
  "`brew install nats-server` (macOS), or put a release binary on PATH (or run scripts/ensure-nats-server.sh)"

/** `nats-server` from PATH, else Debian's /usr/sbin (not on a normal user's PATH). */
export const findNatsServer = (env: NodeJS.ProcessEnv = process.env): Option.Option<string> =>
  Option.fromNullable(findExecutable("nats-server", env, ["/usr/sbin", "/usr/local/sbin"]))

export interface NatsServerOptions {
  readonly host: string
  readonly port: number
  /** Longest wait for "Server is ready". */
  readonly readyTimeoutMs?: number
  readonly binary?: string
  /**
   * A nats-server config file, passed with `-c`. Credentials belong there (a file of mode 0600),
   * never on the command line, which every user of the machine can read with `ps`.
   */
  readonly configFile?: string
  /** Extra command-line arguments (nothing secret). */
  readonly args?: ReadonlyArray<string>
  /**
   * Where the server's pid is recorded while it runs. A start that finds a record whose owner
   * died and whose server still runs stops that server first (see src/process/pid-file.ts).
   */
  readonly pidFile?: string
  /** SIGTERM to SIGKILL on stop, and for the orphan guard; default 5 s. */
  readonly stopGraceMs?: number
}

export interface RunningNatsServer {
  readonly url: string
  readonly pid: number
  readonly process: ChildProcess
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

/** Sends `signal` to the child's process group (the server and its orphan guard), else to the child. */
const signalGroup = (child: ChildProcess, signal: NodeJS.Signals) => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal)
  } catch {
    child.kill(signal)
  }
}

const stopChild = (child: ChildProcess, graceMs: number) =>
  Effect.async<void>((resume) => {
    const done = () => {
      child.stdin?.destroy()
      resume(Effect.void)
    }
    if (exited(child)) return done()
    const kill = setTimeout(() => signalGroup(child, "SIGKILL"), graceMs)
    child.once("exit", () => {
      clearTimeout(kill)
      done()
    })
    signalGroup(child, "SIGTERM")
  })

/**
 * Starts a real `nats-server` on host:port, owned by the current scope: it is ready when the effect
 * completes and stopped (SIGTERM, then SIGKILL after the grace period) when the scope closes. It
 * runs in a process group of its own, so that a first Ctrl-C in the terminal does not reach it
 * while the controller drains over it, and it dies with this process however this process ends
 * (src/process/orphan-guard.ts).
 */
export const startNatsServer = (options: NatsServerOptions) =>
  Effect.gen(function* () {
    const binary = options.binary ?? Option.getOrUndefined(findNatsServer())
    if (binary === undefined) {
      return yield* new NatsServerError({ message: `nats-server was not found on PATH or in /usr/sbin; ${INSTALL_HINT}` })
    }
    if (findExecutable(binary) === undefined) {
      return yield* new NatsServerError({ message: `cannot run ${binary}: no such executable; ${INSTALL_HINT}` })
    }
    const graceMs = options.stopGraceMs ?? 5_000
    if (options.pidFile !== undefined) {
      const stale = yield* stopStaleChild(options.pidFile)
      if (Option.isSome(stale)) {
        yield* Effect.logWarning(`stopped a nats-server (pid ${stale.value}) left running by a previous run`)
      }
    }
    const args = [
      "-a",
      options.host,
      "-p",
      String(options.port),
      ...(options.configFile === undefined ? [] : ["-c", options.configFile]),
      ...(options.args ?? [])
    ]
    const guarded = guardedCommand(binary, args, { graceMs })
    const ready = yield* Deferred.make<void, NatsServerError>()
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(guarded.command, guarded.args, {
          env: { ...process.env, ...guarded.env },
          // stdin: the orphan guard's pipe; stderr: the server's log, read for "Server is ready".
          stdio: ["pipe", "ignore", "pipe"],
          detached: true
        })
      ),
      // The pid file goes once the server is gone, not before.
      (child) =>
        stopChild(child, graceMs).pipe(
          Effect.zipRight(
            options.pidFile === undefined || child.pid === undefined ? Effect.void : removePidFile(options.pidFile, child.pid)
          )
        )
    )
    // Nothing is ever written to the guard's pipe; a broken pipe after the child's exit is expected.
    child.stdin?.on("error", () => undefined)
    const pid = child.pid ?? -1
    if (options.pidFile !== undefined && pid > 0) {
      yield* writePidFile(options.pidFile, { pid, ownerPid: process.pid, marker: "nats-server", startedAt: Date.now() })
    }
    // The scope normally stops it, and the orphan guard covers a hard exit; this covers a
    // `process.exit` that skips the scope without waiting for the guard.
    const onExit = () => signalGroup(child, "SIGTERM")
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
    return { url: `nats://${options.host}:${options.port}`, pid, process: child } satisfies RunningNatsServer
  })

const lastLine = (output: string) => {
  const lines = output.trim().split("\n")
  return (lines[lines.length - 1] ?? "").replace(/^\[\d+\]\s+\S+\s+\S+\s+/, "") || "no output"
}

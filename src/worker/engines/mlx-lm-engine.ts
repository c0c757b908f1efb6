import * as Net from "node:net"
import { isAbsolute, join } from "node:path"
import * as Command from "@effect/platform/Command"
import * as HttpClient from "@effect/platform/HttpClient"
import type { CommandExecutor, Process } from "@effect/platform/CommandExecutor"
import {
  Deferred,
  Duration,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  Layer,
  Option,
  Ref,
  Schedule,
  Scope,
  Stream
} from "effect"
import { ClusterConfigService } from "../../config/cluster-config.js"
import { MLX_LM_FEATURES } from "../../domain/features.js"
import { sanitizeForLog } from "../../domain/log-text.js"
import { findExecutable, guardedCommand } from "../../process/orphan-guard.js"
import { removePidFile, stopStaleChildren, writePidFile } from "../../process/pid-file.js"
import { EngineError, InferenceEngine, type InferenceEngineService } from "./inference-engine.js"
import { streamChatCompletion } from "./openai-engine.js"

/**
 * The `mlx-lm` engine: one `PYTHON -m MODULE --model PATH --port P` child (normally
 * `python3 -m mlx_lm.server`) per served model, started on that model's first request and spoken
 * to with the openai engine's code.
 *
 * - Ports: the lowest port from `base_port` upward that no other child holds and that can be bound
 *   on the host right now. Another process can still take it in the moment before the child binds
 *   it (an outgoing connection's ephemeral port, another program): a child that exits while
 *   starting because its port is taken (its output says "address already in use", or the port
 *   cannot be bound now) is started again on the next free port, up to `PORT_ATTEMPTS` times.
 * - Ready when `GET http://HOST:P/v1/models` answers (any status below 500) within
 *   `startup_timeout_ms`; a child that exits or stays silent until then fails the request with
 *   `engine_start_failed` (naming the exit code and its last output lines) and is stopped.
 * - Requests that arrive while a child starts wait for the same start. A start goes on when the
 *   request that caused it is cancelled, so the next request finds the server up.
 * - A child that exits (crash, kill) is forgotten at once; the next request starts it again.
 * - Its stdout/stderr are drained (debug log; the last lines kept for error messages).
 * - Stopping (scope close, shutdown): SIGTERM to the child's process group, SIGKILL after
 *   `stopGraceMs` (5 s).
 * - No orphans: each child runs under an orphan guard (src/process/orphan-guard.ts) that stops it
 *   when this process dies, however it dies; with `pidDir`, each child's pid is recorded there and
 *   the engine's start stops children that a dead previous run left behind.
 * - The `model` field is not sent: `mlx_lm.server` then uses the model it was started with
 *   (sending an absolute path would make it try to load that path as a new model).
 * - Continuation (issue 13): legacy completions only. They go to `mlx_lm.server`'s
 *   `/v1/completions` with the raw prompt, which continues the prompt + the text so far exactly.
 *   Chats cannot: it renders a chat with `apply_chat_template(messages, add_generation_prompt=True,
 *   …)` — the flag is fixed in its `_tokenize`, and `chat_template_kwargs: { continue_final_message:
 *   true }` only makes the tokenizer refuse the pair — so it would answer a final assistant message
 *   with a new turn instead of continuing it.
 * - Features (issue 12): `MLX_LM_FEATURES` (src/domain/features.ts), what `mlx_lm.server` honours.
 */

export interface MlxLmOptions {
  readonly python: string
  readonly module: string
  readonly basePort: number
  readonly startupTimeoutMs: number
  /** Where the child listens and is reached; default `127.0.0.1`. */
  readonly host?: string
  /** Working directory of the child (tests point it at a fake server package). */
  readonly cwd?: string
  /** Extra environment variables of the child. */
  readonly env?: Readonly<Record<string, string>>
  /** Time between SIGTERM and SIGKILL on stop; default 5 s. */
  readonly stopGraceMs?: number
  /** Folder of the children's pid files (`mlx-lm-PORT.pid`); none: no pid files. */
  readonly pidDir?: string
}

export interface RunningServer {
  readonly modelPath: string
  readonly port: number
  readonly pid: number
  readonly baseUrl: string
}

export interface MlxLmSupervisor {
  /** The running server for `modelPath`, started (and awaited) when there is none. */
  readonly ensure: (modelPath: string) => Effect.Effect<RunningServer, EngineError>
  /** The servers that are up now. */
  readonly running: Effect.Effect<ReadonlyArray<RunningServer>>
}

interface Slot {
  readonly ready: Deferred.Deferred<RunningServer, EngineError>
}

interface State {
  readonly slots: ReadonlyMap<string, Slot>
  readonly ports: ReadonlySet<number>
  readonly up: ReadonlyMap<string, RunningServer>
}

const TAIL_LINES = 20

/** Starts of one server, each on a new port, when another process takes the port first. */
export const PORT_ATTEMPTS = 3

/** "Address already in use" as Python (errno 98 on Linux, 48 on macOS) and Node print it. */
const ADDRESS_IN_USE = /address already in use|EADDRINUSE/i

const PID_FILE_PREFIX = "mlx-lm-"

/** True when `port` can be bound on `host` now. */
export const isPortFree = (port: number, host: string): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const server = Net.createServer()
    server.once("error", () => resume(Effect.succeed(false)))
    server.listen({ port, host, exclusive: true }, () => {
      server.close(() => resume(Effect.succeed(true)))
    })
  })

const stoppedError = () => new EngineError({ code: "engine_stopped", message: "the mlx-lm engine has stopped" })

const startFailed = (message: string, cause?: unknown) =>
  new EngineError({ code: "engine_start_failed", message, ...(cause !== undefined ? { cause } : {}) })

/** Stops a child: SIGTERM to its group, then SIGKILL when it is still there after `graceMs`. */
const stopChild = (proc: Process, graceMs: number, label: string) =>
  Effect.gen(function* () {
    const running = yield* proc.isRunning.pipe(Effect.orElseSucceed(() => false))
    if (!running) return
    yield* Effect.logInfo(`stopping ${label} (pid ${proc.pid})`)
    // Interruptible: this runs in finalizers, where a timeout could not stop the wait otherwise.
    const stopped = yield* Effect.interruptible(proc.kill("SIGTERM")).pipe(
      Effect.timeoutOption(Duration.millis(graceMs)),
      Effect.orElseSucceed(() => Option.none())
    )
    if (Option.isNone(stopped)) {
      yield* Effect.logWarning(`${label} (pid ${proc.pid}) ignored SIGTERM for ${graceMs} ms: SIGKILL`)
      yield* Effect.interruptible(proc.kill("SIGKILL")).pipe(Effect.timeout("5 seconds"), Effect.ignore)
    }
  })

export const makeMlxLmSupervisor = (
  options: MlxLmOptions
): Effect.Effect<MlxLmSupervisor, never, Scope.Scope | CommandExecutor | HttpClient.HttpClient> =>
  Effect.gen(function* () {
    const host = options.host ?? "127.0.0.1"
    const graceMs = options.stopGraceMs ?? 5_000
    const supervisorScope = yield* Effect.scope
    const context = yield* Effect.context<CommandExecutor | HttpClient.HttpClient>()
    const client = yield* HttpClient.HttpClient
    const state = yield* Ref.make<State>({ slots: new Map(), ports: new Set(), up: new Map() })
    const portLock = yield* Effect.makeSemaphore(1)
    let closed = false
    if (options.pidDir !== undefined) {
      for (const pid of yield* stopStaleChildren(options.pidDir, PID_FILE_PREFIX)) {
        yield* Effect.logWarning(`stopped an mlx-lm server (pid ${pid}) left running by a previous run`)
      }
    }
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closed = true
        const pending = (yield* Ref.get(state)).slots.values()
        for (const slot of pending) yield* Deferred.fail(slot.ready, stoppedError())
      })
    )

    const releasePort = (port: number) =>
      Ref.update(state, (s) => {
        const ports = new Set(s.ports)
        ports.delete(port)
        return { ...s, ports }
      })

    const forget = (modelPath: string, slot: Slot) =>
      Ref.update(state, (s) => {
        if (s.slots.get(modelPath) !== slot) return s
        const slots = new Map(s.slots)
        slots.delete(modelPath)
        const up = new Map(s.up)
        up.delete(modelPath)
        return { ...s, slots, up }
      })

    const allocatePort = portLock.withPermits(1)(
      Effect.gen(function* () {
        for (let port = options.basePort; port <= 65535; port++) {
          const taken = (yield* Ref.get(state)).ports.has(port)
          if (taken) continue
          if (yield* isPortFree(port, host)) {
            yield* Ref.update(state, (s) => ({ ...s, ports: new Set([...s.ports, port]) }))
            return port
          }
        }
        return yield* Effect.fail(startFailed(`no free port from ${options.basePort} upward`))
      })
    )

    const probe = (baseUrl: string) =>
      client.get(`${baseUrl}/models`).pipe(
        Effect.flatMap((res) => (res.status < 500 ? Effect.void : Effect.fail(`status ${res.status}`))),
        Effect.timeout("2 seconds"),
        Effect.scoped
      )

    /** True when a child that exited while starting lost its port to another process. */
    const lostPort = (port: number, tail: ReadonlyArray<string>) =>
      tail.some((line) => ADDRESS_IN_USE.test(line))
        ? Effect.succeed(true)
        : isPortFree(port, host).pipe(Effect.map((free) => !free))

    const start = (modelPath: string, slot: Slot, attempt: number): Effect.Effect<void, EngineError, CommandExecutor> =>
      Effect.gen(function* () {
        const port = yield* allocatePort
        // A folder name is text from disk: escaped so that it cannot start a forged log line.
        const label = `mlx-lm server for ${sanitizeForLog(modelPath, 500)} on port ${port}`
        const baseUrl = `http://${host}:${port}/v1`
        const childScope = yield* Scope.fork(supervisorScope, ExecutionStrategy.sequential)
        const closeChild = Scope.close(childScope, Exit.void)
        const fail = (error: EngineError) =>
          closeChild.pipe(
            Effect.zipRight(releasePort(port)),
            Effect.zipRight(forget(modelPath, slot)),
            Effect.zipRight(Effect.logWarning(`${label}: ${error.message}`)),
            Effect.zipRight(Deferred.fail(slot.ready, error))
          )

        // The launcher's `exec` of a missing program would fail only inside the child: check first.
        const relativeToCwd = options.cwd !== undefined && options.python.includes("/") && !isAbsolute(options.python)
        const python = relativeToCwd ? join(options.cwd ?? "", options.python) : options.python
        if (findExecutable(python, { ...process.env, ...options.env }) === undefined) {
          return yield* fail(
            startFailed(`cannot start ${options.python} -m ${options.module}: ${options.python} was not found or is not executable (ENOENT)`)
          )
        }
        const guarded = guardedCommand(python, ["-m", options.module, "--model", modelPath, "--port", String(port)], {
          graceMs
        })
        let command = Command.make(guarded.command, ...guarded.args).pipe(Command.env({ ...options.env, ...guarded.env }))
        if (options.cwd !== undefined) command = Command.workingDirectory(command, options.cwd)

        const started = yield* Command.start(command).pipe(Scope.extend(childScope), Effect.either)
        if (Either.isLeft(started)) {
          return yield* fail(startFailed(`cannot start ${options.python} -m ${options.module}: ${started.left.message}`, started.left))
        }
        const proc = started.right
        if (options.pidDir !== undefined) {
          const pidFile = join(options.pidDir, `${PID_FILE_PREFIX}${port}.pid`)
          yield* writePidFile(pidFile, { pid: proc.pid, ownerPid: process.pid, marker: options.module, startedAt: Date.now() })
          // Added before the stop below, so it runs after it: the file goes once the child is gone.
          yield* Scope.addFinalizer(childScope, removePidFile(pidFile, proc.pid))
        }
        yield* Scope.addFinalizer(childScope, stopChild(proc, graceMs, label))
        yield* Effect.logInfo(`starting ${label} (pid ${proc.pid})`)

        const tail: Array<string> = []
        yield* Stream.merge(proc.stdout, proc.stderr).pipe(
          Stream.decodeText(),
          Stream.splitLines,
          Stream.runForEach((line) =>
            Effect.sync(() => {
              tail.push(line)
              if (tail.length > TAIL_LINES) tail.shift()
            }).pipe(Effect.zipRight(Effect.logDebug(`[mlx-lm ${port}] ${sanitizeForLog(line, 2_000)}`)))
          ),
          Effect.ignore,
          Effect.forkIn(childScope)
        )
        const output = () => (tail.length > 0 ? `; last output:\n${tail.join("\n")}` : "")

        const exited = yield* Deferred.make<string>()
        yield* proc.exitCode.pipe(
          Effect.map((code) => `exited with code ${code}`),
          Effect.orElseSucceed(() => "was killed by a signal"),
          Effect.tap((how) => Deferred.succeed(exited, how)),
          Effect.flatMap((how) =>
            Effect.gen(function* () {
              // A child that never came up is the start's to handle (fail, or try another port).
              const wasUp = (yield* Ref.get(state)).up.get(modelPath)?.pid === proc.pid
              yield* releasePort(port)
              if (wasUp) {
                yield* forget(modelPath, slot)
                yield* Effect.logWarning(`${label} ${how}; the next request starts it again${output()}`)
              }
              yield* closeChild
            })
          ),
          Effect.forkIn(childScope)
        )

        const ready = yield* probe(baseUrl).pipe(
          Effect.retry(Schedule.spaced("200 millis")),
          Effect.either,
          Effect.raceFirst(Deferred.await(exited).pipe(Effect.map(Either.left))),
          Effect.timeoutOption(Duration.millis(options.startupTimeoutMs))
        )
        if (Option.isNone(ready)) {
          return yield* fail(startFailed(`${label} did not answer within ${options.startupTimeoutMs} ms${output()}`))
        }
        if (Either.isLeft(ready.value)) {
          if (attempt < PORT_ATTEMPTS && (yield* lostPort(port, tail))) {
            yield* closeChild.pipe(Effect.zipRight(releasePort(port)))
            yield* Effect.logWarning(`${label}: another process took port ${port} while it started; starting it on the next free port`)
            return yield* start(modelPath, slot, attempt + 1)
          }
          return yield* fail(startFailed(`${label} ${String(ready.value.left)} while starting${output()}`))
        }
        const server: RunningServer = { modelPath, port, pid: proc.pid, baseUrl }
        yield* Ref.update(state, (s) => ({ ...s, up: new Map([...s.up, [modelPath, server]]) }))
        // The exit watcher forgets only a server that was up: one that exited just now is ours.
        if (yield* Deferred.isDone(exited)) {
          return yield* fail(startFailed(`${label} ${yield* Deferred.await(exited)} as it became ready${output()}`))
        }
        yield* Effect.logInfo(`${label} is ready`)
        yield* Deferred.succeed(slot.ready, server)
      }).pipe(
        Effect.onExit((exit) =>
          Exit.isSuccess(exit)
            ? Effect.void
            : Deferred.failCause(slot.ready, exit.cause).pipe(Effect.zipRight(forget(modelPath, slot)))
        )
      )

    const ensure = (modelPath: string) =>
      Effect.gen(function* () {
        if (closed) return yield* Effect.fail(stoppedError())
        const fresh: Slot = { ready: yield* Deferred.make<RunningServer, EngineError>() }
        const [slot, isNew] = yield* Ref.modify(state, (s): readonly [readonly [Slot, boolean], State] => {
          const existing = s.slots.get(modelPath)
          if (existing !== undefined) return [[existing, false], s]
          return [[fresh, true], { ...s, slots: new Map([...s.slots, [modelPath, fresh]]) }]
        })
        if (isNew) yield* start(modelPath, slot, 1).pipe(Effect.provide(context), Effect.forkIn(supervisorScope))
        return yield* Deferred.await(slot.ready)
      })

    return {
      ensure,
      running: Ref.get(state).pipe(Effect.map((s) => [...s.up.values()]))
    }
  })

/** The mlx-lm engine over a supervisor. */
export const makeMlxLmEngine = (
  options: MlxLmOptions
): Effect.Effect<InferenceEngineService & { readonly supervisor: MlxLmSupervisor }, never, Scope.Scope | CommandExecutor | HttpClient.HttpClient> =>
  Effect.gen(function* () {
    const supervisor = yield* makeMlxLmSupervisor(options)
    const client = yield* HttpClient.HttpClient
    return {
      type: "mlx-lm",
      features: MLX_LM_FEATURES,
      supervisor,
      generate: (request, modelPath, emit, emitToolCalls) =>
        supervisor
          .ensure(modelPath)
          .pipe(
            Effect.flatMap((server) =>
              streamChatCompletion(client, { baseUrl: server.baseUrl, model: () => undefined }, request, emit, emitToolCalls)
            )
          )
    }
  })

export const mlxLmEngineLayer = (
  options: MlxLmOptions
): Layer.Layer<InferenceEngine, never, CommandExecutor | HttpClient.HttpClient> =>
  Layer.scoped(InferenceEngine, makeMlxLmEngine(options))

/** The mlx-lm engine with `worker.engine.mlx_lm` from the config. */
export const MlxLmEngineLive: Layer.Layer<InferenceEngine, never, ClusterConfigService | CommandExecutor | HttpClient.HttpClient> =
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const config = yield* ClusterConfigService
      const mlx = config.worker.engine.mlxLm
      yield* Effect.logInfo(`inference engine: mlx-lm (${mlx.python} -m ${mlx.module}, ports from ${mlx.basePort})`)
      return mlxLmEngineLayer({
        python: mlx.python,
        module: mlx.module,
        basePort: mlx.basePort,
        startupTimeoutMs: mlx.startupTimeoutMs,
        pidDir: config.stateDir
      })
    })
  )

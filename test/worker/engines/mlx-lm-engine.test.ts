import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Exit, Fiber, Layer, Scope } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import { InferenceEngineLive } from "../../../src/worker/engines/engine-live.js"
import { InferenceEngine, type InferenceEngineService } from "../../../src/worker/engines/inference-engine.js"
import { isPortFree, makeMlxLmEngine, type MlxLmOptions, PORT_ATTEMPTS } from "../../../src/worker/engines/mlx-lm-engine.js"
import { readPidFile, writePidFile } from "../../../src/process/pid-file.js"
import { eventually } from "../../support/eventually.js"
import { engineRequest } from "../support/engine-fixtures.js"
import { runEngine } from "../support/run-engine.js"

const FIXTURES = Path.join(import.meta.dirname, "..", "..", "fixtures")

const request = (over: Partial<InferenceRequest> = {}): InferenceRequest =>
  engineRequest({ model: "mlx-community/fake", messages: [{ role: "user", content: "hi there" }], maxTokens: 16, ...over })

/**
 * A base port unlikely to collide with other test files running at the same time: below Linux's
 * ephemeral range (32768–60999), where the suite's own outgoing connections take their ports.
 */
const randomBasePort = () => 20_000 + Math.floor(Math.random() * 12_000)

/** Listens on `port` until the test's scope closes: another process holding the port. */
const holdPort = (port: number) =>
  Effect.gen(function* () {
    const blocker = Net.createServer()
    yield* Effect.async<void, Error>((resume) => {
      blocker.once("error", (error) => resume(Effect.fail(error)))
      blocker.listen(port, "127.0.0.1", () => resume(Effect.void))
    }).pipe(Effect.orDie)
    // It reads what the engine's readiness probe sends, so it sees the probe hang up and can close.
    blocker.on("connection", (socket) => socket.resume())
    yield* Effect.addFinalizer(() => Effect.async<void>((resume) => void blocker.close(() => resume(Effect.void))))
  })

/** Holds each port the engine picks (seen by its pid file) before the child, slowed down, binds it. */
const takePortOnceChosen = (pidDir: string, port: number) =>
  eventually(Effect.sync(() => Fs.existsSync(Path.join(pidDir, `mlx-lm-${port}.pid`)))).pipe(Effect.zipRight(holdPort(port)))

const options = (over: Partial<MlxLmOptions> = {}): MlxLmOptions => ({
  python: "python3",
  module: "fake_mlx_lm.server",
  basePort: randomBasePort(),
  startupTimeoutMs: 15_000,
  cwd: FIXTURES,
  stopGraceMs: 2_000,
  ...over
})

const platform = Layer.merge(NodeContext.layer, NodeHttpClient.layer)

/** The engine in its own scope, so a test can close it (stop the children) and look afterwards. */
const engineInScope = (o: MlxLmOptions) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const engine = yield* makeMlxLmEngine(o).pipe(Scope.extend(scope), Effect.provide(platform))
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    return { engine, close: Scope.close(scope, Exit.void) }
  })

const run = (engine: InferenceEngineService, path: string) => runEngine(engine, request(), path)

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("mlx-lm engine (supervising a fake mlx_lm.server)", () => {
  it.scopedLive("starts a server on first use, streams through it, reuses it, and stops it on close", () =>
    Effect.gen(function* () {
      const o = options()
      const { engine, close } = yield* engineInScope(o)
      expect(engine.type).toBe("mlx-lm")
      expect(yield* engine.supervisor.running).toEqual([])
      const result = yield* run(engine, "/models/a")
      expect(result.tokens).toEqual(["fake", " mlx", " says", " hello", " to", " you"])
      expect(result.batches.every((b) => b.length > 0)).toBe(true)
      expect(result.finish).toEqual({ finishReason: "stop", usage: { promptTokens: 2, completionTokens: 6 } })
      const [first] = yield* engine.supervisor.running
      expect(first?.modelPath).toBe("/models/a")
      expect(first?.port).toBeGreaterThanOrEqual(o.basePort)
      expect(first?.baseUrl).toBe(`http://127.0.0.1:${first?.port}/v1`)
      yield* run(engine, "/models/a")
      const again = yield* engine.supervisor.running
      expect(again.map((s) => s.pid)).toEqual([first?.pid])
      yield* close
      expect(isAlive(first?.pid ?? 0)).toBe(false)
    })
  )

  it.scopedLive("concurrent first requests share one start; another model gets its own server and port", () =>
    Effect.gen(function* () {
      const { engine } = yield* engineInScope(options({ env: { FAKE_MLX_STARTUP_DELAY_S: "0.3" } }))
      yield* Effect.all([run(engine, "/models/a"), run(engine, "/models/a"), run(engine, "/models/b")], {
        concurrency: "unbounded"
      })
      const running = yield* engine.supervisor.running
      expect(running.map((s) => s.modelPath).sort()).toEqual(["/models/a", "/models/b"])
      expect(new Set(running.map((s) => s.port)).size).toBe(2)
    })
  )

  it.scopedLive("restarts a server that crashed: the next request starts a new process", () =>
    Effect.gen(function* () {
      const { engine } = yield* engineInScope(options())
      yield* run(engine, "/models/a")
      const [before] = yield* engine.supervisor.running
      process.kill(before?.pid ?? 0, "SIGKILL")
      yield* eventually(Effect.map(engine.supervisor.running, (r) => expect(r).toEqual([])))
      const result = yield* run(engine, "/models/a")
      expect(result.tokens.length).toBe(6)
      const [after] = yield* engine.supervisor.running
      expect(after?.pid).not.toBe(before?.pid)
    })
  )

  it.scopedLive("a server that exits while starting fails the request with its output; the next request tries again", () =>
    Effect.gen(function* () {
      const { engine } = yield* engineInScope(options({ env: { FAKE_MLX_FAIL_START: "1" } }))
      const error = yield* Effect.flip(run(engine, "/models/broken"))
      expect(error).toMatchObject({ _tag: "EngineError", code: "engine_start_failed" })
      expect(String((error as { message: string }).message)).toMatch(/exited with code 3/)
      expect(String((error as { message: string }).message)).toMatch(/cannot load model \/models\/broken/)
      expect(yield* engine.supervisor.running).toEqual([])
      const again = yield* Effect.flip(run(engine, "/models/broken"))
      expect(again).toMatchObject({ code: "engine_start_failed" })
    })
  )

  it.scopedLive("a stopped engine refuses new work instead of hanging", () =>
    Effect.gen(function* () {
      const { engine, close } = yield* engineInScope(options())
      yield* close
      const error = yield* Effect.flip(run(engine, "/models/a"))
      expect(error).toMatchObject({ code: "engine_stopped" })
    })
  )

  it.scopedLive("a server that does not answer within startup_timeout_ms is stopped and the request fails", () =>
    Effect.gen(function* () {
      const { engine } = yield* engineInScope(
        options({ startupTimeoutMs: 600, env: { FAKE_MLX_STARTUP_DELAY_S: "30" } })
      )
      const error = yield* Effect.flip(run(engine, "/models/slow"))
      expect(error).toMatchObject({ code: "engine_start_failed" })
      expect(String((error as { message: string }).message)).toMatch(/did not answer within 600 ms/)
      expect(yield* engine.supervisor.running).toEqual([])
    })
  )

  it.scopedLive("a missing python executable is engine_start_failed", () =>
    Effect.gen(function* () {
      const { engine } = yield* engineInScope(options({ python: "/nonexistent/python3" }))
      const error = yield* Effect.flip(run(engine, "/models/a"))
      expect(error).toMatchObject({ code: "engine_start_failed" })
      expect(String((error as { message: string }).message)).toMatch(/cannot start/)
    })
  )

  it.scopedLive("a child that ignores SIGTERM is killed after the grace period", () =>
    Effect.gen(function* () {
      const { engine, close } = yield* engineInScope(
        options({ stopGraceMs: 300, env: { FAKE_MLX_IGNORE_SIGTERM: "1" } })
      )
      yield* run(engine, "/models/a")
      const [server] = yield* engine.supervisor.running
      expect(isAlive(server?.pid ?? 0)).toBe(true)
      const started = Date.now()
      yield* close
      expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      expect(isAlive(server?.pid ?? 0)).toBe(false)
    })
  )

  it.scopedLive("skips a base port that something else holds", () =>
    Effect.gen(function* () {
      const base = randomBasePort()
      yield* holdPort(base)
      expect(yield* isPortFree(base, "127.0.0.1")).toBe(false)
      const { engine } = yield* engineInScope(options({ basePort: base }))
      yield* run(engine, "/models/a")
      const [server] = yield* engine.supervisor.running
      expect(server?.port).toBe(base + 1)
    })
  )

  /**
   * One request whose server loses its first port: the test takes it once the engine has chosen it
   * (the fake loads its model for 1 s before it binds). The request's run, and the port it ended on.
   */
  const loseFirstPort = (env: Readonly<Record<string, string>> = {}) =>
    Effect.gen(function* () {
      const pidDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "mlx-pids-"))
      const base = randomBasePort()
      const { engine } = yield* engineInScope(options({ basePort: base, pidDir, env: { FAKE_MLX_STARTUP_DELAY_S: "1", ...env } }))
      const request = yield* Effect.fork(run(engine, "/models/a"))
      yield* takePortOnceChosen(pidDir, base)
      const result = yield* Fiber.join(request)
      const [server] = yield* engine.supervisor.running
      return { base, result, port: server?.port }
    })

  it.scopedLive("a port another process takes while the server starts: started again on the next free port", () =>
    Effect.gen(function* () {
      const { base, result, port } = yield* loseFirstPort()
      expect(result.tokens.join("")).toBe("fake mlx says hello to you")
      expect(port).toBe(base + 1)
    })
  )

  it.scopedLive("a server that says nothing about its lost port: the port, taken after its exit, tells", () =>
    Effect.gen(function* () {
      const { base, port } = yield* loseFirstPort({ FAKE_MLX_QUIET_BIND_ERROR: "1" })
      expect(port).toBe(base + 1)
    })
  )

  it.scopedLive(`ports taken ${PORT_ATTEMPTS} times in a row: the request fails with the child's output`, () =>
    Effect.gen(function* () {
      const pidDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "mlx-pids-"))
      const base = randomBasePort()
      const { engine } = yield* engineInScope(options({ basePort: base, pidDir, env: { FAKE_MLX_STARTUP_DELAY_S: "1" } }))
      const request = yield* Effect.fork(Effect.either(run(engine, "/models/a")))
      for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) yield* takePortOnceChosen(pidDir, base + attempt)
      const result = yield* Fiber.join(request)
      expect(result).toMatchObject({ _tag: "Left", left: { code: "engine_start_failed" } })
      const message = Either.isLeft(result) ? result.left.message : ""
      expect(message).toContain(`on port ${base + PORT_ATTEMPTS - 1} exited with code 1 while starting`)
      expect(message).toMatch(/Address already in use/)
      expect(yield* engine.supervisor.running).toEqual([])
      expect(Fs.readdirSync(pidDir)).toEqual([])
    })
  )

  it.scopedLive("records each child's pid in pidDir while it runs, with its command line's marker", () =>
    Effect.gen(function* () {
      const pidDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "mlx-pids-"))
      const { engine, close } = yield* engineInScope(options({ pidDir }))
      yield* run(engine, "/models/a")
      const [server] = yield* engine.supervisor.running
      const file = Path.join(pidDir, `mlx-lm-${server?.port}.pid`)
      expect(readPidFile(file)).toMatchObject({
        _tag: "Some",
        value: { pid: server?.pid, ownerPid: process.pid, marker: "fake_mlx_lm.server" }
      })
      yield* close
      expect(Fs.existsSync(file)).toBe(false)
    })
  )

  it.scopedLive("a start stops a model server that a dead previous run left behind", () =>
    Effect.gen(function* () {
      const pidDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "mlx-pids-"))
      const port = randomBasePort()
      // The previous run's server: started without a guard, its owner long gone.
      const leftover = ChildProcess.spawn("python3", ["-m", "fake_mlx_lm.server", "--model", "/models/old", "--port", String(port)], {
        cwd: FIXTURES,
        detached: true,
        stdio: "ignore"
      })
      // Up and listening, as a previous run's server is: not a process still in its interpreter's
      // start-up (python3 may be a shim that execs several programs first).
      yield* eventually(isPortFree(port, "127.0.0.1").pipe(Effect.map((free) => !free)), { timeoutMs: 15_000 })
      const deadOwner = ChildProcess.spawnSync("true").pid ?? 999_999
      yield* writePidFile(Path.join(pidDir, `mlx-lm-${port}.pid`), {
        pid: leftover.pid ?? -1,
        ownerPid: deadOwner,
        marker: "fake_mlx_lm.server",
        startedAt: 0
      })
      const exited = Effect.async<void>((resume) => {
        if (leftover.exitCode !== null || leftover.signalCode !== null) return resume(Effect.void)
        leftover.once("exit", () => resume(Effect.void))
      })
      yield* engineInScope(options({ pidDir }))
      // A bound, not a measure: python starts slowly on a loaded machine.
      yield* exited.pipe(Effect.timeout("10 seconds"))
      expect(leftover.signalCode).toBe("SIGTERM")
      expect(Fs.readdirSync(pidDir)).toEqual([])
    })
  )

  it.scopedLive("InferenceEngineLive builds the mlx-lm engine from worker.engine.mlx_lm", () =>
    Effect.gen(function* () {
      const previous = process.env["PYTHONPATH"]
      process.env["PYTHONPATH"] = FIXTURES
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (previous === undefined) delete process.env["PYTHONPATH"]
          else process.env["PYTHONPATH"] = previous
        })
      )
      const engine = yield* Effect.map(
        Layer.build(
          InferenceEngineLive.pipe(
            Layer.provide([
              platform,
              ClusterConfigService.layerTest((c) => ({
                ...c,
                stateDir: Fs.mkdtempSync(Path.join(Os.tmpdir(), "mlx-state-")),
                worker: {
                  ...c.worker,
                  engine: {
                    ...c.worker.engine,
                    type: "mlx-lm",
                    mlxLm: {
                      python: "python3",
                      module: "fake_mlx_lm.server",
                      basePort: randomBasePort(),
                      startupTimeoutMs: 15_000
                    }
                  }
                }
              }))
            ])
          )
        ),
        Context.get(InferenceEngine)
      )
      expect(engine.type).toBe("mlx-lm")
      const result = yield* run(engine, "/models/a")
      expect(result.finish).toMatchObject({ finishReason: "stop" })
      expect(result.tokens.join("")).toBe("fake mlx says hello to you")
    })
  )
})

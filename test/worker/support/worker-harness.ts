import { NodeFileSystem } from "@effect/platform-node"
import { expect } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Logger, Option, Schema, Scope, TestClock } from "effect"
import { ClusterConfigService } from "../../../src/config/cluster-config.js"
import type { ClusterConfig } from "../../../src/config/schema.js"
import { RequestId } from "../../../src/domain/ids.js"
import { InferenceReply, type InferenceRequest, type TokenBatch, TokenMessage } from "../../../src/domain/inference.js"
import { Subjects } from "../../../src/domain/subjects.js"
import type { HardwareProfile } from "../../../src/domain/worker.js"
import { NatsTransport, type NatsTransportService } from "../../../src/nats/nats-transport.js"
import type { InferenceEngine } from "../../../src/worker/engines/inference-engine.js"
import { syntheticEngineLayer } from "../../../src/worker/engines/synthetic-engine.js"
import { Hardware } from "../../../src/worker/hardware.js"
import { ModelScanner } from "../../../src/worker/model-scanner.js"
import { Worker, WorkerCore, type WorkerService } from "../../../src/worker/worker-live.js"
import { WorkerStats } from "../../../src/worker/worker-stats.js"
import { eventually } from "../../support/eventually.js"
import { ScriptedNats, type ScriptedNatsHandle } from "../../support/scripted-nats.js"

/**
 * The harness worker's hardware: the M2 Max 96 GB whose captured outputs are
 * test/fixtures/hardware/darwin-m2-max-96gb.* (hardware.test.ts parses them into exactly this).
 */
export const testHardware: HardwareProfile = {
  platform: "darwin",
  arch: "arm64",
  chip: "Apple M2 Max",
  cpuCores: 12,
  gpuCores: 38,
  gpuMemoryGB: 72,
  totalMemoryGB: 96
}

export type WorkerPatch = (worker: ClusterConfig["worker"]) => ClusterConfig["worker"]

export interface HarnessOptions {
  readonly workerId?: string
  readonly modelDir: string
  readonly worker?: WorkerPatch
  readonly heartbeatIntervalMs?: number
  readonly engine?: Layer.Layer<InferenceEngine>
}

export interface Harness {
  readonly workerId: string
  readonly worker: WorkerService
  readonly bus: ScriptedNatsHandle
  /** The worker's own NatsTransport (the scripted bus): to listen or send from a test as another client would. */
  readonly nats: NatsTransportService
  /** Log lines (`LEVEL message`) of the worker's fibers. */
  readonly logs: ReadonlyArray<string>
  /** Closes the worker's scope: graceful stop. */
  readonly close: Effect.Effect<void>
}

export const configFor = (options: HarnessOptions) =>
  ClusterConfigService.layerTest((c) => ({
    ...c,
    discovery: { ...c.discovery, heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1_000 },
    worker: (options.worker ?? ((w) => w))({
      ...c.worker,
      id: options.workerId ?? "test-worker",
      modelDir: options.modelDir,
      maxConcurrent: 2,
      drainTimeoutMs: 10_000
    })
  }))

/**
 * The worker core over the scripted in-memory bus (test/support/scripted-nats.ts), a fixed hardware profile and (by default) an
 * unpaced synthetic engine; built in its own scope so a test can stop it.
 */
export const startHarness = (options: HarnessOptions) =>
  Effect.gen(function* () {
    const logs: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      logs.push(`${logLevel.label} ${Array.isArray(message) ? message.map(String).join(" ") : String(message)}`)
    })
    const layer = WorkerCore.pipe(
      Layer.provide(
        Layer.mergeAll(
          ModelScanner.layer.pipe(Layer.provide(NodeFileSystem.layer)),
          Hardware.layerTest(testHardware),
          options.engine ?? syntheticEngineLayer({ tokensPerSecond: 0, firstTokenMs: 0 }),
          WorkerStats.Default
        )
      ),
      Layer.provideMerge(ScriptedNats.layer),
      Layer.provide(configFor(options))
    )
    const scope = yield* Scope.make()
    // At the end of a test, stop the worker, moving the TestClock (a second at a time, up to an hour)
    // only as far as a drain needs: every tick of the worker's timers costs real time.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
        yield* Effect.yieldNow()
        for (let s = 0; s < 3_600 && Option.isNone(yield* Fiber.poll(closing)); s++) yield* TestClock.adjust("1 second")
        yield* Fiber.join(closing)
      })
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    const worker = Context.get(context, Worker)
    const harness: Harness = {
      workerId: worker.workerId,
      worker,
      bus: Context.get(context, ScriptedNats),
      nats: Context.get(context, NatsTransport),
      logs,
      close: Scope.close(scope, Exit.void)
    }
    return harness
  })

let counter = 0
export const requestId = (prefix = "req"): RequestId => Schema.decodeSync(RequestId)(`${prefix}-${++counter}`)

export const inferenceRequest = (over: Partial<InferenceRequest> = {}): InferenceRequest => ({
  requestId: requestId(),
  model: "synthetic/demo",
  messages: [{ role: "user", content: "tell me something" }],
  maxTokens: 20,
  stream: true,
  ...over
})

/** Sends a request (a JSON value, or a string sent as raw text) to the harness worker, with `replyTo` as its reply subject. */
export const send = (h: Harness, request: unknown, replyTo?: string) =>
  h.bus.inject(Subjects.inference(h.workerId), request, replyTo)

export const replyTo = (request: InferenceRequest) => `reply.${request.requestId}`

/** Waits until the worker says it runs exactly `n` requests: the engine has them, not just the bus. */
export const untilRunning = (h: Harness, n: number) => eventually(Effect.map(h.worker.running, (running) => expect(running).toBe(n)))

/** Sends `request` (replies to `replyTo(request)`) and waits until it is the one request the worker runs: a request to act on mid-run. */
export const startRequest = (h: Harness, request: InferenceRequest) =>
  Effect.gen(function* () {
    yield* send(h, request, replyTo(request))
    yield* untilRunning(h, 1)
  })

export const repliesTo = (h: Harness, subject: string) => h.bus.sentOn(subject, InferenceReply)

export const tokenMessages = (h: Harness, id: string) => h.bus.sentOn(Subjects.response(id), TokenMessage)

/** Waits until the request's last message is a `done` (or `ending`): all its messages, in order. */
export const untilEnded = (h: Harness, id: string, ending: TokenMessage["type"] = "done") =>
  eventually(
    Effect.map(tokenMessages(h, id), (messages) => {
      expect(messages.at(-1)?.type).toBe(ending)
      return messages
    })
  )

/** The `tokens` batches among a request's messages, in order. */
export const batchesOf = (messages: ReadonlyArray<TokenMessage>): ReadonlyArray<TokenBatch> =>
  messages.filter((m): m is TokenBatch => m.type === "tokens")

/** All tokens of a request's batches, in order. */
export const tokensOf = (messages: ReadonlyArray<TokenMessage>): ReadonlyArray<string> =>
  batchesOf(messages).flatMap((b) => b.tokens)

/** The `index` each batch must carry to be contiguous: the number of tokens sent before it. */
export const contiguousIndexes = (batches: ReadonlyArray<TokenBatch>): ReadonlyArray<number> => {
  let next = 0
  return batches.map((b) => {
    const at = next
    next += b.tokens.length
    return at
  })
}

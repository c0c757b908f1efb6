import * as Os from "node:os"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Clock, Context, Effect, Layer, Queue, Ref, Schedule, Stream } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import type { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import {
  ControllerAnnounce,
  type HardwareProfile,
  type ModelSkills,
  WorkerDeregistration,
  WorkerHeartbeat,
  WorkerRegistration
} from "../domain/worker.js"
import { NatsTransport } from "../nats/nats-transport.js"
import { InferenceEngineLive } from "./engines/engine-live.js"
import { InferenceEngine } from "./engines/inference-engine.js"
import { Hardware } from "./hardware.js"
import { makeInferenceHandler } from "./inference-handler.js"
import { ModelScanner } from "./model-scanner.js"
import { probePolicy, watchOwners } from "./owner-watch.js"
import { RequestOwners } from "./request-owners.js"
import { makeProbeResponder } from "./probe-responder.js"
import { resolveWorkerId } from "./worker-id.js"
import { ensureWorkerIdFree, type WorkerIdInUse } from "./worker-id-guard.js"
import { makeMetricsSampler, type StatsSnapshot, WorkerStats } from "./worker-stats.js"

/**
 * The worker role (docs/contract.md §3, §4). In its scope:
 *
 * 0. fails with `WorkerIdInUse` when another live worker answers its id's probe (`worker-id-guard.ts`);
 * 1. subscribes to `worker.{id}.inference`, `worker.{id}.cancel`, `worker.{id}.probe` (answered
 *    from the NATS callback, issue 13) and `controller.announce`, flushes;
 * 2. publishes `worker.register` and logs `worker WORKER_ID registered` (once);
 * 3. registers again on every `controller.announce` and whenever a rescan changes the skills;
 * 4. publishes `worker.heartbeat` every `discovery.heartbeat_interval_ms` and rescans the model
 *    folders every `worker.rescan_interval_ms` (scheduled fibers of the scope);
 * 4a. probes the controllers that own its running requests and stops the requests of one that is
 *    gone (issue 14, `owner-watch.ts`);
 * 5. on scope close: refuses new requests as `busy`, waits for running ones up to
 *    `worker.drain_timeout_ms` (then stops them with an `error` `worker_shutdown`), publishes
 *    `worker.deregister` and flushes.
 *
 * Registration fields without a source in the config: `hostname` is `os.hostname()`, `ip` the first
 * non-internal IPv4 address (else 127.0.0.1), `port` 0 (a worker listens on no port of its own).
 */

export interface WorkerService {
  readonly workerId: WorkerId
  /** The registration this worker would publish now. */
  readonly registration: Effect.Effect<WorkerRegistration>
  /** Publishes `worker.register` now. */
  readonly register: Effect.Effect<void>
  /** Scans the model folders now; registers again when the skills changed. */
  readonly rescan: Effect.Effect<ModelSkills>
  /** Request counters since start. */
  readonly stats: Effect.Effect<StatsSnapshot>
  /** Requests running now. */
  readonly running: Effect.Effect<number>
}

/** Shortest time between two early heartbeats (a slot freed after a busy refusal, issue 14). */
export const EARLY_HEARTBEAT_GAP_MS = 100

export class Worker extends Context.Tag("worker/Worker")<Worker, WorkerService>() {}

type NetworkInterfaces = ReturnType<typeof Os.networkInterfaces>

/** The first non-internal IPv4 address, else 127.0.0.1. */
export const primaryIPv4 = (interfaces: NetworkInterfaces): string => {
  for (const addresses of Object.values(interfaces)) {
    for (const address of addresses ?? []) {
      if (address.family === "IPv4" && !address.internal) return address.address
    }
  }
  return "127.0.0.1"
}

export interface RegistrationInput {
  readonly workerId: WorkerId
  readonly hostname: string
  readonly ip: string
  readonly hardware: HardwareProfile
  readonly maxConcurrent: number
  readonly engine: string
  /** What the engine honours (issue 12); per model, the operator's `worker.model_features`. */
  readonly features?: ReadonlyArray<string>
  readonly modelFeatures?: Readonly<Record<string, ReadonlyArray<string>>>
  readonly skills: ModelSkills
  readonly priority: number
  readonly tags: ReadonlyArray<string>
  readonly timestamp: number
  /** The kinds of request the engine can continue (issue 13); none when absent or empty. */
  readonly continuation?: ReadonlyArray<string> | undefined
}

/** The per-model lists of the models served now (none: the field is left out). */
const perModelFeatures = (
  all: Readonly<Record<string, ReadonlyArray<string>>>,
  models: ReadonlyArray<string>
): Record<string, ReadonlyArray<string>> | undefined => {
  const out: Record<string, ReadonlyArray<string>> = {}
  for (const model of models) if (Object.prototype.hasOwnProperty.call(all, model)) out[model] = all[model] ?? []
  return Object.keys(out).length > 0 ? out : undefined
}

const withModelFeatures = (input: RegistrationInput): { readonly modelFeatures?: Record<string, ReadonlyArray<string>> } => {
  const perModel = input.modelFeatures === undefined ? undefined : perModelFeatures(input.modelFeatures, input.skills.availableModels)
  return perModel === undefined ? {} : { modelFeatures: perModel }
}

export const buildRegistration = (input: RegistrationInput): WorkerRegistration => ({
  workerId: input.workerId,
  hostname: input.hostname,
  ip: input.ip,
  port: 0,
  hardware: input.hardware,
  capabilities: {
    maxConcurrent: input.maxConcurrent,
    supportsStreaming: true,
    engine: input.engine,
    probes: true,
    ...(input.continuation !== undefined && input.continuation.length > 0 ? { continuation: [...input.continuation] } : {}),
    ...(input.features === undefined ? {} : { features: input.features }),
    ...withModelFeatures(input)
  },
  skills: input.skills,
  priority: input.priority,
  tags: input.tags,
  timestamp: input.timestamp
})

const runWorker = (workerId: WorkerId) =>
  Effect.gen(function* () {
    const config = yield* ClusterConfigService
    const nats = yield* NatsTransport
    const engine = yield* InferenceEngine
    const scanner = yield* ModelScanner
    const hardware = yield* Hardware
    const stats = yield* WorkerStats
    const workerConfig = config.worker
    const hostname = Os.hostname()

    const registration = Effect.gen(function* () {
      return buildRegistration({
        workerId,
        hostname,
        ip: primaryIPv4(Os.networkInterfaces()),
        hardware,
        maxConcurrent: workerConfig.maxConcurrent,
        engine: engine.type,
        features: engine.features,
        modelFeatures: workerConfig.modelFeatures,
        skills: yield* scanner.current,
        priority: workerConfig.priority,
        tags: workerConfig.tags,
        timestamp: yield* Clock.currentTimeMillis,
        continuation: engine.continuation
      })
    })
    const register = registration.pipe(
      Effect.flatMap((message) => nats.publish(Subjects.register, WorkerRegistration, message)),
      Effect.withSpan("Worker.register")
    )

    // Before this worker listens on any subject of its id.
    yield* ensureWorkerIdFree(workerId)
    const owners = new RequestOwners()
    // A slot freed after a busy refusal: one early heartbeat tells every controller (issue 14).
    const capacityFreed = yield* Effect.acquireRelease(Queue.sliding<void>(1), Queue.shutdown)
    const handler = yield* makeInferenceHandler({
      workerId,
      maxConcurrent: workerConfig.maxConcurrent,
      requestTimeoutMs: workerConfig.requestTimeoutMs,
      owners,
      capacityFreed: () => void capacityFreed.unsafeOffer(undefined)
    })
    yield* watchOwners({ workerId, owners, policy: probePolicy(workerConfig.controllerProbeIntervalMs) })
    // Liveness probes of the controllers (issue 13), answered from the NATS callback.
    yield* makeProbeResponder({ workerId, active: stats.activeNow })
    const announces = yield* nats.subscribe(Subjects.announce, ControllerAnnounce)
    yield* nats.flush

    yield* register
    yield* nats.flush
    yield* Effect.logInfo(`worker ${workerId} registered`)

    yield* Stream.runForEach(announces, (incoming) =>
      Effect.logDebug(`controller ${incoming.data.controllerId} announced: registering again`).pipe(
        Effect.zipRight(register)
      )
    ).pipe(Effect.forkScoped)

    // Skills changes (from the schedule below or an on-demand rescan) are announced by registering.
    yield* scanner.changes.pipe(
      Stream.drop(1),
      Stream.runForEach(() => register),
      Effect.forkScoped
    )

    const sampler = yield* makeMetricsSampler({
      maxConcurrent: workerConfig.maxConcurrent,
      activeByController: () => owners.byController()
    })
    const heartbeat = Effect.gen(function* () {
      const metrics = yield* sampler.sample
      const timestamp = yield* Clock.currentTimeMillis
      yield* nats.publish(Subjects.heartbeat, WorkerHeartbeat, { workerId, timestamp, metrics })
    })
    yield* heartbeat.pipe(
      Effect.catchAllCause((cause) => Effect.logError("heartbeat failed", cause)),
      Effect.schedule(Schedule.spaced(config.discovery.heartbeatIntervalMs)),
      Effect.forkScoped
    )
    // Early heartbeats, at most one per EARLY_HEARTBEAT_GAP_MS however many slots free.
    yield* Queue.take(capacityFreed).pipe(
      Effect.zipRight(heartbeat),
      Effect.catchAllCause((cause) => Effect.logError("early heartbeat failed", cause)),
      Effect.zipRight(Effect.sleep(EARLY_HEARTBEAT_GAP_MS)),
      Effect.forever,
      Effect.forkScoped
    )
    yield* scanner.rescan.pipe(
      Effect.catchAllCause((cause) => Effect.logError("model rescan failed", cause)),
      Effect.schedule(Schedule.spaced(workerConfig.rescanIntervalMs)),
      Effect.forkScoped
    )

    const stopped = yield* Ref.make(false)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        if (yield* Ref.getAndSet(stopped, true)) return
        yield* handler.drain(workerConfig.drainTimeoutMs)
        const timestamp = yield* Clock.currentTimeMillis
        yield* nats.publish(Subjects.deregister, WorkerDeregistration, { workerId, timestamp })
        yield* Effect.interruptible(nats.flush).pipe(Effect.timeoutOption("5 seconds"))
        yield* Effect.logInfo(`worker ${workerId} deregistered`)
      })
    )

    const service: WorkerService = {
      workerId,
      registration,
      register,
      rescan: scanner.rescan.pipe(Effect.map((r) => r.skills)),
      stats: stats.snapshot,
      running: handler.running
    }
    return service
  })

/** The worker in the current scope (see the module comment); its log lines carry `workerId`. */
export const makeWorker = Effect.gen(function* () {
  const config = yield* ClusterConfigService
  const workerId = resolveWorkerId(config.worker.id)
  return yield* runWorker(workerId).pipe(Effect.annotateLogs({ workerId }))
})

/**
 * The worker over services given by the caller: `NatsTransport`, `ClusterConfigService`,
 * `InferenceEngine`, `ModelScanner`, `Hardware`, `WorkerStats` (tests swap some of them).
 */
export const WorkerCore = Layer.scoped(Worker, makeWorker)

/** Model scanner, hardware, engine (chosen by the config) and stats, over Node's platform services. */
export const WorkerServicesLive = Layer.mergeAll(
  ModelScanner.layer,
  Hardware.layer,
  InferenceEngineLive,
  WorkerStats.Default
).pipe(Layer.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layer)))

/** The whole worker role; the caller provides only `NatsTransport` and `ClusterConfigService`. */
export const WorkerLive: Layer.Layer<Worker, WorkerIdInUse, NatsTransport | ClusterConfigService> = WorkerCore.pipe(
  Layer.provide(WorkerServicesLive)
)

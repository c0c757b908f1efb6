import * as HttpServer from "@effect/platform/HttpServer"
import { Effect, Layer, Schedule } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { AdmissionQueue } from "./admission-queue.js"
import { ClusterDashboard } from "./cluster-dashboard.js"
import { ClusterStatusQuery } from "./cluster-status.js"
import { ControllerIdentity } from "./controller-identity.js"
import { HealthMonitorLive } from "./health-monitor.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { LoadMonitor } from "./load-monitor.js"
import { ProbeResponderLive } from "./probe-responder.js"
import { Registry } from "./registry.js"
import { announce, RegistrySyncLive } from "./registry-sync.js"
import { RequestJournal } from "./request-journal.js"
import { RequestStats } from "./request-stats.js"
import { Router } from "./router.js"

/**
 * What the front doors and the drain call. Each service declares what it needs (its
 * `dependencies`), and a layer is built once per process however many services need it, so these
 * are the same instances the Router uses.
 */
const ControllerServicesLive = Layer.mergeAll(
  Router.Default,
  ClusterStatusQuery.Default,
  ClusterDashboard.Default,
  AdmissionQueue.Default,
  Registry.Default,
  RequestStats.Default,
  RequestJournal.Default,
  ControllerLifecycle.Default,
  ControllerIdentity.Default,
  LoadMonitor.Default
)

/**
 * The controller's services, with the background work that keeps them true (the NATS registry
 * sync, the health sweeps, the answers to workers' probes) started after them and stopped before
 * them. Needs a NATS connection and the config.
 */
export const ControllerCoreLive = Layer.mergeAll(RegistrySyncLive, HealthMonitorLive, ProbeResponderLive).pipe(
  Layer.provideMerge(ControllerServicesLive)
)

/** Waits until no request is active or `drain_timeout_ms` has passed; then ends what still runs. */
export const drain = Effect.gen(function* () {
  const lifecycle = yield* ControllerLifecycle
  const stats = yield* RequestStats
  const config = yield* ClusterConfigService
  yield* lifecycle.transition("draining")
  const active = (yield* stats.snapshot).active
  if (active > 0) yield* Effect.logInfo(`draining: waiting for ${active} active requests`)
  const idle = stats.snapshot.pipe(
    Effect.repeat({ until: (s) => s.active === 0, schedule: Schedule.spaced("50 millis") })
  )
  // Drain runs in a finalizer, which is uninterruptible: the wait must be made interruptible for the timeout to fire.
  const finished = yield* idle.pipe(Effect.interruptible, Effect.timeout(config.controller.drainTimeoutMs), Effect.option)
  if (finished._tag === "None") {
    const left = (yield* stats.snapshot).active
    yield* Effect.logWarning(`drain timeout: ending ${left} requests still active`)
    yield* lifecycle.forceStop
  }
  yield* lifecycle.transition("stopping")
}).pipe(Effect.withSpan("Controller.drain"))

/**
 * The last controller layer to start and the first to stop: announces the controller (every worker
 * registers again), declares it ready with the contract's log line, and on shutdown drains.
 */
export const ControllerReadyLive = Layer.scopedDiscard(
    Effect.gen(function* () {
      const lifecycle = yield* ControllerLifecycle
      const server = yield* HttpServer.HttpServer
      const address =
        server.address._tag === "TcpAddress"
          ? `http://${server.address.hostname}:${server.address.port}`
          : `unix:${server.address.path}`
      yield* lifecycle.transition("registering")
      yield* announce
      yield* lifecycle.transition("starting")
      yield* Effect.addFinalizer(() => drain.pipe(Effect.zipRight(lifecycle.transition("stopped"))))
      yield* lifecycle.transition("ready")
      yield* Effect.logInfo(`controller ready on ${address}`)
    })
  )

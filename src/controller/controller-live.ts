import { HttpServer } from "@effect/platform"
import { Effect, Layer, Schedule } from "effect"
import { ClusterConfigService } from "../config/cluster-config.js"
import { AdmissionQueue } from "./admission-queue.js"
import { Balancer } from "./balancer.js"
import { ClusterActivity } from "./cluster-activity.js"
import { ClusterDashboard } from "./cluster-dashboard.js"
import { ClusterStatusQuery } from "./cluster-status.js"
import { ControllerIdentity } from "./controller-identity.js"
import { HealthMonitorLive } from "./health-monitor.js"
import { InFlight } from "./in-flight.js"
import { DeadlineSweep } from "./deadline-sweep.js"
import { ControllerLifecycle } from "./lifecycle.js"
import { LoadMonitor } from "./load-monitor.js"
import { ProbeResponderLive } from "./probe-responder.js"
import { Registry } from "./registry.js"
import { announce, RegistrySyncLive } from "./registry-sync.js"
import { RequestJournal } from "./request-journal.js"
import { RequestStats } from "./request-stats.js"
import { Router } from "./router.js"
import { WorkerProbes } from "./worker-probes.js"

/**
 * The controller's state: registry, balancer, in-flight counts, statistics, lifecycle, clocks, and
 * the request journal with the activity it feeds (one instance, shared with the dashboard).
 */
const ControllerStateLive = Layer.mergeAll(
  Registry.Default,
  Balancer.Default,
  InFlight.Default,
  RequestStats.Default,
  ControllerLifecycle.Default,
  ControllerIdentity.Default,
  DeadlineSweep.Default,
  LoadMonitor.Default,
  RequestJournal.DefaultWithoutDependencies.pipe(Layer.provideMerge(ClusterActivity.Default))
)

/**
 * Everything the front doors call (Router, Registry, statistics, lifecycle), with the background
 * work that keeps it true: the NATS registry sync and the health sweeps. Needs a NATS connection
 * and the config.
 */
export const ControllerCoreLive = Layer.mergeAll(
  RegistrySyncLive,
  HealthMonitorLive,
  ProbeResponderLive,
  ClusterStatusQuery.Default,
  ClusterDashboard.Default
).pipe(
  Layer.provideMerge(Router.Default),
  Layer.provideMerge(WorkerProbes.Default),
  Layer.provideMerge(AdmissionQueue.Default),
  Layer.provideMerge(ControllerStateLive)
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

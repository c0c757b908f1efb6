import { Clock, Effect, Layer, Option, Ref, Stream } from "effect"
import type { ClusterConfigService } from "../config/cluster-config.js"
import { Subjects } from "../domain/subjects.js"
import { ControllerAnnounce, WorkerDeregistration, WorkerHeartbeat, WorkerRegistration } from "../domain/worker.js"
import { NatsTransport } from "../nats/nats-transport.js"
import { ControllerIdentity } from "./controller-identity.js"
import { makeRegistrationGate } from "./registration-gate.js"
import { Registry } from "./registry.js"

/** At most one `controller.announce` per this many ms is caused by heartbeats of unknown workers. */
export const ANNOUNCE_MIN_INTERVAL_MS = 1_000

/**
 * Publishes `controller.announce` (`{ controllerId, timestamp }`): every worker answers by
 * registering again. The controller lifecycle publishes one on start.
 */
export const announce: Effect.Effect<void, never, NatsTransport | ControllerIdentity> = Effect.gen(function* () {
  const nats = yield* NatsTransport
  const { controllerId } = yield* ControllerIdentity
  const timestamp = yield* Clock.currentTimeMillis
  yield* nats.publish(Subjects.announce, ControllerAnnounce, { controllerId, timestamp })
  yield* Effect.logDebug(`announced controller ${controllerId}`)
}).pipe(Effect.withSpan("RegistrySync.announce"))

/**
 * Whether an announce is due at `now` given the time of the previous one, and the new "previous".
 * Pure, for the rate limit: the first is always due, then one per `minIntervalMs`.
 */
export const announceDue = (
  last: number | undefined,
  now: number,
  minIntervalMs: number = ANNOUNCE_MIN_INTERVAL_MS
): readonly [boolean, number | undefined] =>
  last === undefined || now - last >= minIntervalMs ? [true, now] : [false, last]

/**
 * Feeds the Registry from NATS (docs/contract.md §4.3): `worker.register`, `worker.heartbeat` and
 * `worker.deregister`, each consumed in order by one fiber of the layer's scope. A heartbeat from a
 * worker the registry does not know makes the controller announce itself, rate limited to one
 * announce per second however many such heartbeats arrive. Every message passes the registration
 * policy first (registration-gate.ts: allowed ids, max workers, bounds, overrides). The
 * subscriptions exist on the connection once the layer is built.
 */
export const RegistrySyncLive: Layer.Layer<never, never, NatsTransport | Registry | ControllerIdentity | ClusterConfigService> =
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const nats = yield* NatsTransport
      const registry = yield* Registry
      const identity = yield* ControllerIdentity
      const gate = yield* makeRegistrationGate
      /** Runs `apply` on what the policy lets through. */
      const admitted =
        <A>(check: (a: A) => Effect.Effect<Option.Option<A>>, apply: (a: A) => Effect.Effect<void>) =>
        (a: A) =>
          Effect.flatMap(check(a), Option.match({ onNone: () => Effect.void, onSome: apply }))
      const lastAnnounce = yield* Ref.make<number | undefined>(undefined)

      const announceLimited = (unknownWorkerId: string) =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const due = yield* Ref.modify(lastAnnounce, (last) => announceDue(last, now))
          if (!due) return
          yield* Effect.logInfo(`heartbeat from unknown worker ${unknownWorkerId}: announcing so that workers register`).pipe(
            Effect.annotateLogs({ workerId: unknownWorkerId })
          )
          yield* announce.pipe(
            Effect.provideService(NatsTransport, nats),
            Effect.provideService(ControllerIdentity, identity)
          )
        })

      const registrations = yield* nats.subscribe(Subjects.register, WorkerRegistration)
      const heartbeats = yield* nats.subscribe(Subjects.heartbeat, WorkerHeartbeat)
      const deregistrations = yield* nats.subscribe(Subjects.deregister, WorkerDeregistration)

      yield* registrations.pipe(
        Stream.runForEach((msg) => admitted(gate.registration, registry.register)(msg.data)),
        Effect.forkScoped
      )
      yield* heartbeats.pipe(
        Stream.runForEach((msg) =>
          admitted(gate.heartbeat, (hb: WorkerHeartbeat) =>
            registry
              .heartbeat(hb)
              .pipe(Effect.flatMap((result) => (result === "unknown" ? announceLimited(hb.workerId) : Effect.void)))
          )(msg.data)
        ),
        Effect.forkScoped
      )
      yield* deregistrations.pipe(
        Stream.runForEach((msg) => admitted(gate.deregistration, registry.deregister)(msg.data)),
        Effect.forkScoped
      )
      // The subscriptions exist on the server, not only on this connection, once the layer is built.
      yield* nats.flush
      yield* Effect.logDebug("registry sync subscribed to worker.register, worker.heartbeat, worker.deregister")
    })
  )

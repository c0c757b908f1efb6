import { Deferred, Effect, type Stream, SubscriptionRef } from "effect"
import type { ControllerState } from "../domain/cluster.js"
import { ShuttingDown } from "../domain/errors.js"

/**
 * The controller's lifecycle state (docs/contract.md §5.6): idle → registering → starting → ready
 * → draining → stopping → stopped (`connecting` is in the contract's list but never used: the
 * NATS connection is made before this service exists). The Router takes new requests only while ready;
 * `forceStop` ends the streams still running when the drain timeout has passed.
 */
export class ControllerLifecycle extends Effect.Service<ControllerLifecycle>()("controller/Lifecycle", {
  effect: Effect.gen(function* () {
    const state = yield* SubscriptionRef.make<ControllerState>("idle")
    const stopSignal = yield* Deferred.make<void>()
    const startedAt = Date.now()

    const transition = (to: ControllerState) =>
      SubscriptionRef.getAndSet(state, to).pipe(
        Effect.flatMap((from) => (from === to ? Effect.void : Effect.logDebug(`controller ${from} → ${to}`)))
      )

    return {
      startedAt,
      state: SubscriptionRef.get(state),
      changes: state.changes as Stream.Stream<ControllerState>,
      transition,
      /** Fails with `ShuttingDown` unless the controller takes new requests. */
      ensureAccepting: Effect.flatMap(SubscriptionRef.get(state), (s) =>
        s === "ready" ? Effect.void : Effect.fail(new ShuttingDown({}))
      ),
      /** Completes when running streams must end now. */
      stopped: Deferred.await(stopSignal),
      forceStop: Deferred.succeed(stopSignal, undefined)
    } as const
  })
}) {}

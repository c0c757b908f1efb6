import { Effect, Either, Layer } from "effect"
import { Subjects } from "../domain/subjects.js"
import { ControllerProbeReply } from "../domain/worker.js"
import { encoderFor } from "../nats/codec.js"
import { NatsTransport } from "../nats/nats-transport.js"
import { ControllerIdentity } from "./controller-identity.js"

/**
 * Answers `controller.{controllerId}.probe` (issue 14): workers that run this controller's requests
 * ask about once a second whether it is still alive, and stop its work when it is not (see
 * src/worker/owner-watch.ts). The answer (`{ controllerId }`, encoded once) is sent from the NATS
 * callback itself, with no Effect and no fiber, so that a busy controller still answers at once.
 * The probe's body is not read: whoever asks gets the same answer, and an answer says no more than
 * the subscription does.
 *
 * Part of the controller core: subscribed (and flushed to the server) before the controller is
 * ready, so before any request carries its id; unsubscribed after the drain, so that the requests
 * still finishing during a graceful stop are not taken for orphans.
 */
export const ProbeResponderLive: Layer.Layer<never, never, NatsTransport | ControllerIdentity> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const { controllerId } = yield* ControllerIdentity
    const subject = Subjects.controllerProbe(controllerId)
    const answer = Either.getOrThrowWith(encoderFor(ControllerProbeReply)({ controllerId }), (reason) => new Error(`controller id ${controllerId}: ${reason}`))
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        nats.listen(subject, (message) => {
          if (message.reply !== undefined && message.reply !== "") nats.send(message.reply, answer)
        })
      ),
      (subscription) => Effect.sync(() => subscription.close())
    )
    yield* nats.flush
    yield* Effect.logDebug(`answering probes on ${subject}`)
  })
)

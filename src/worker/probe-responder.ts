import { Effect, Either } from "effect"
import type { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import { WorkerProbeReply } from "../domain/worker-probe.js"
import { encoderFor } from "../nats/codec.js"
import { NatsTransport } from "../nats/nats-transport.js"

export interface ProbeResponderOptions {
  readonly workerId: WorkerId
  /** Requests running now, read synchronously. */
  readonly active: () => number
}

const encodeReply = encoderFor(WorkerProbeReply)

/**
 * Answers the controllers' liveness probes on `worker.{id}.probe` (issue 13) for the caller's
 * scope: straight from the NATS callback, with one `send` — no fiber, no engine, no queue — so the
 * answer only needs this process's event loop to turn. A worker whose engine is saturated still
 * answers at once; one that is gone (no subscription) or hung (no turn of its event loop) does not,
 * which is what the controller needs to know. The probe's body is not read: nothing in it changes
 * the answer. A probe without a reply subject gets none.
 */
export const makeProbeResponder = (options: ProbeResponderOptions) =>
  Effect.gen(function* () {
    const nats = yield* NatsTransport
    const { workerId } = options
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        nats.listen(Subjects.probe(workerId), (message) => {
          const reply = message.reply
          if (reply === undefined || reply === "") return
          Either.map(encodeReply({ workerId, active: options.active() }), (bytes) => nats.send(reply, bytes))
        })
      ),
      (subscription) => Effect.sync(() => subscription.close())
    )
  })

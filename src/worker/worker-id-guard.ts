import { Effect, Schema } from "effect"
import { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import { WorkerProbe, WorkerProbeReply } from "../domain/worker-probe.js"
import { NatsTransport } from "../nats/nats-transport.js"

/**
 * How long a starting worker waits for another one to answer its id's probe. A live worker
 * answers straight from its NATS callback, in about a millisecond; nobody listening is answered by
 * the server at once ("no responders"). The timeout only matters for a worker that is hung, or for
 * a bus whose permissions (generated before this check) refuse the probe: both count as free.
 */
export const ID_CHECK_TIMEOUT_MS = 500

/** Another live worker on the bus already uses this worker's id. */
export class WorkerIdInUse extends Schema.TaggedError<WorkerIdInUse>()("WorkerIdInUse", {
  workerId: WorkerId,
  /** Requests the other worker said it runs. */
  active: Schema.Number
}) {
  override get message(): string {
    return (
      `worker id ${this.workerId} is taken: another worker on the bus answers worker.${this.workerId}.probe ` +
      `(it runs ${this.active} requests). Two workers with one id would both answer every request sent to it; ` +
      "give each worker its own id (cluster.worker.id, --worker-id or WORKER_ID; by default the host name's first label)"
    )
  }
}

/**
 * Fails with `WorkerIdInUse` when a live worker already answers `worker.{workerId}.probe` (the
 * liveness probe controllers send, issue 13). Run before this worker subscribes to anything of its
 * own: two workers with one id both take every `worker.{id}.inference` request, so each stream gets
 * two workers' tokens and fails with a token gap, and the registry mixes their heartbeats.
 */
export const ensureWorkerIdFree = (workerId: WorkerId, timeoutMs = ID_CHECK_TIMEOUT_MS): Effect.Effect<void, WorkerIdInUse, NatsTransport> =>
  Effect.flatMap(NatsTransport, (nats) =>
    nats.request(Subjects.probe(workerId), WorkerProbe, { workerId }, WorkerProbeReply, { timeoutMs }).pipe(
      Effect.flatMap((reply) => Effect.fail(new WorkerIdInUse({ workerId, active: reply.active }))),
      Effect.catchTags({
        NatsNoResponders: () => Effect.void,
        NatsRequestTimeout: () => Effect.void,
        // Something answered that is not a worker's probe reply: not a worker of this cluster.
        NatsReplyInvalid: () => Effect.void,
        NatsPayloadTooLarge: () => Effect.void
      })
    )
  )

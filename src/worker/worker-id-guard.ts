import { Effect, Schema } from "effect"
import { WorkerId } from "../domain/ids.js"
import { Subjects } from "../domain/subjects.js"
import { WorkerProbe, WorkerProbeReply } from "../domain/worker-probe.js"
import { probeLiveness } from "../nats/liveness-probe.js"
import { NatsTransport } from "../nats/nats-transport.js"

/**
 * How long a starting worker waits for another one to answer its id's probe. A live worker
 * answers straight from its NATS callback, in about a millisecond; nobody listening is answered by
 * the server at once ("no responders"). The timeout only matters for a worker that is hung, or for
 * a bus whose permissions (generated before this check) refuse the probe: both count as free.
 */
export const ID_CHECK_TIMEOUT_MS = 500

/** Another live worker on the bus already uses this worker's id. */
export class WorkerIdInUse extends Schema.TaggedError<WorkerIdInUse>()("WorkerIdInUse", { workerId: WorkerId }) {
  override get message(): string {
    return (
      `worker id ${this.workerId} is taken: another worker on the bus answers worker.${this.workerId}.probe. ` +
      "Two workers with one id would both answer every request sent to it; " +
      "give each worker its own id (cluster.worker.id, --worker-id or WORKER_ID; by default the host name's first label)"
    )
  }
}

/**
 * Fails with `WorkerIdInUse` when something answers `worker.{workerId}.probe` (the liveness probe
 * controllers send, issue 13), by the rule of every probe (`probeLiveness`): an answer in other
 * words than a probe reply is someone there too. Run before this worker subscribes to anything of
 * its own: two workers with one id both take every `worker.{id}.inference` request, so each stream
 * gets two workers' tokens and fails with a token gap, and the registry mixes their heartbeats.
 */
export const ensureWorkerIdFree = (workerId: WorkerId, timeoutMs = ID_CHECK_TIMEOUT_MS): Effect.Effect<void, WorkerIdInUse, NatsTransport> =>
  Effect.flatMap(NatsTransport, (nats) => probeLiveness(nats, Subjects.probe(workerId), WorkerProbe, { workerId }, WorkerProbeReply, timeoutMs)).pipe(
    Effect.flatMap((result) => (result === "answered" ? Effect.fail(new WorkerIdInUse({ workerId })) : Effect.void))
  )

import type { ClusterConfig } from "../config/schema.js"
import { Subjects } from "../domain/subjects.js"
import { resolveWorkerId } from "../worker/worker-id.js"
import type { Permissions } from "./nats-server-config.js"

/**
 * Who may do what on the bus, per role (docs/operations.md, "Threat model"). A worker's NATS user
 * may only announce itself, answer requests and relay tokens; it cannot read another worker's
 * prompts, nor anything sent to controllers:
 *
 * - publish: `worker.register`, `worker.heartbeat`, `worker.deregister`, `response.>` (tokens),
 *   requests to `controller.*.probe` (is the controller that owns my requests alive?), and to its
 *   own `worker.<own id>.probe` (at start: does another live worker use my id?); the ack of an
 *   inference request goes to the request's reply subject (`allow_responses`);
 * - subscribe: `worker.<own id>.>` (its inference and cancel subjects, and probes from controllers),
 *   `controller.announce`, and its own reply inbox `_INBOX_<own id>.>`.
 *
 * A controller sees every prompt by design, so its user may publish and subscribe to everything;
 * narrowing it would buy little and break with every subject added later.
 */

/**
 * The reply-inbox prefix of a worker's NATS connection (nats.js `inboxPrefix`): the only inbox
 * its permissions let it subscribe to, so that it never reads another connection's replies.
 */
export const workerInboxPrefix = (workerId: string): string => `_INBOX_${workerId}`

/**
 * The inbox prefix this process's NATS connection must use: a worker-only process gets its own
 * (`_INBOX_<worker id>`); a controller (or `mode: both`, which connects as a controller) keeps
 * nats.js's default `_INBOX`.
 */
export const inboxPrefixFor = (config: ClusterConfig, hostname?: string): string | undefined =>
  config.mode === "worker" ? workerInboxPrefix(resolveWorkerId(config.worker.id, hostname)) : undefined

/** Subjects a worker requests on (forward compatible: controllers answer probes). */
export const CONTROLLER_PROBE = "controller.*.probe"

export const workerPermissions = (workerId: string): Permissions => ({
  publish: [Subjects.register, Subjects.heartbeat, Subjects.deregister, Subjects.response(">"), CONTROLLER_PROBE, Subjects.probe(workerId)],
  subscribe: [`worker.${workerId}.>`, Subjects.announce, `${workerInboxPrefix(workerId)}.>`],
  allowResponses: true
})

/** A controller's user: everything (`undefined`: no permissions block). */
export const controllerPermissions: Permissions | undefined = undefined

/** NATS user names of the roles. */
export const workerUser = (workerId: string): string => `worker-${workerId}`
export const controllerUser = (name: string): string => `controller-${name}`

import type { RequestId, WorkerId } from "./ids.js"

/** The NATS subjects of docs/contract.md §4.2: the only place their spelling lives. */
export const Subjects = {
  register: "worker.register",
  heartbeat: "worker.heartbeat",
  deregister: "worker.deregister",
  announce: "controller.announce",
  inference: (workerId: WorkerId | string) => `worker.${workerId}.inference`,
  cancel: (workerId: WorkerId | string) => `worker.${workerId}.cancel`,
  /** extension (issue 13): a controller's liveness probe of a worker (`worker-probe.ts`). */
  probe: (workerId: WorkerId | string) => `worker.${workerId}.probe`,
  response: (requestId: RequestId | string) => `response.${requestId}`,
  /** extension (issue 14): a worker's liveness probe of the controller that owns its requests. */
  controllerProbe: (controllerId: string) => `controller.${controllerId}.probe`
} as const

import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import { Effect, Layer } from "effect"

/**
 * A fresh controller id: host name, process id and a random suffix, e.g. `mac-studio-4242-9f1c2a`.
 * Always a `ControllerId` (a NATS subject token of letters, digits, `-` and `_`, at most 128 long):
 * other characters of the host name (`Mac-Studio.local`) become `-`, and a long one is cut.
 */
export const makeControllerId = (host: string = hostname()): string => {
  const safeHost = host.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 96) || "controller"
  return `${safeHost}-${process.pid}-${randomBytes(3).toString("hex")}`
}

/**
 * Who this controller is on the wire (`controller.announce`'s `controllerId`). One id per process
 * start, so workers can tell a restarted controller from the one they knew.
 */
export class ControllerIdentity extends Effect.Service<ControllerIdentity>()("controller/ControllerIdentity", {
  sync: () => ({ controllerId: makeControllerId() })
}) {
  /** A fixed id: for tests. */
  static readonly layerTest = (controllerId: string): Layer.Layer<ControllerIdentity> =>
    Layer.succeed(ControllerIdentity, ControllerIdentity.make({ controllerId }))
}

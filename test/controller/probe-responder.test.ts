import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { ControllerIdentity, makeControllerId } from "../../src/controller/controller-identity.js"
import { ProbeResponderLive } from "../../src/controller/probe-responder.js"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import { ControllerProbe, ControllerProbeReply } from "../../src/domain/worker.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { ScriptedNats } from "../support/scripted-nats.js"

const probe = (controllerId: string) =>
  Effect.flatMap(NatsTransport, (nats) =>
    nats.request(Subjects.controllerProbe(controllerId), ControllerProbe, { workerId: WorkerId.make("w1") }, ControllerProbeReply, { timeoutMs: 100 })
  )

describe("ProbeResponderLive (issue 14)", () => {
  it.scoped("answers controller.{own id}.probe with its id, subscribed and flushed once built; nobody answers for another id; gone with its scope", () =>
    Effect.gen(function* () {
      const bus = yield* ScriptedNats
      const answered = yield* Effect.scoped(
        Effect.gen(function* () {
          yield* Layer.build(ProbeResponderLive)
          expect((yield* bus.timeline).slice(-2)).toEqual(["sub controller.ctl-1.probe", "flush"])
          const reply = yield* probe("ctl-1")
          const other = yield* Effect.flip(probe("ctl-2"))
          expect(other._tag).toBe("NatsNoResponders")
          return reply
        })
      )
      expect(answered).toEqual({ controllerId: "ctl-1" })
      // The scope closed: a worker asking now learns the controller is gone.
      expect((yield* Effect.flip(probe("ctl-1")))._tag).toBe("NatsNoResponders")
    }).pipe(Effect.provide(Layer.merge(ScriptedNats.layer, ControllerIdentity.layerTest("ctl-1"))))
  )

  it("controller ids are subject tokens whatever the host name", () => {
    const id = makeControllerId("Mac-Studio.local")
    expect(id).toMatch(/^Mac-Studio-local-\d+-[0-9a-f]{6}$/)
    expect(makeControllerId("x".repeat(300)).length).toBeLessThanOrEqual(128)
    expect(makeControllerId("")).toMatch(/^controller-/)
  })
})

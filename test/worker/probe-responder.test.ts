import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import { WorkerProbe, WorkerProbeReply } from "../../src/domain/worker-probe.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { makeProbeResponder } from "../../src/worker/probe-responder.js"
import { ScriptedNats } from "../support/scripted-nats.js"

const probe = (id: string) =>
  Effect.flatMap(NatsTransport, (nats) =>
    nats.request(Subjects.probe(id), WorkerProbe, { workerId: WorkerId.make(id) }, WorkerProbeReply, { timeoutMs: 1_000 })
  )

describe("probe responder (issue 13)", () => {
  it.effect("answers worker.{id}.probe at once with its id and the requests it runs now; after its scope, nobody answers", () =>
    Effect.gen(function* () {
      let active = 2
      const scope = yield* Scope.make()
      yield* makeProbeResponder({ workerId: WorkerId.make("w1"), active: () => active }).pipe(Scope.extend(scope))
      expect(yield* probe("w1")).toEqual({ workerId: "w1", active: 2 })
      active = 0
      expect(yield* probe("w1")).toEqual({ workerId: "w1", active: 0 })
      // another worker's subject is not ours
      expect(yield* Effect.flip(probe("w2"))).toMatchObject({ _tag: "NatsNoResponders" })
      yield* Scope.close(scope, Exit.void)
      expect(yield* Effect.flip(probe("w1"))).toMatchObject({ _tag: "NatsNoResponders" })
    }).pipe(Effect.provide(ScriptedNats.layer))
  )

  it.effect("a probe without a reply subject, or with a body it does not read, gets what it asked for: nothing, or an answer", () =>
    Effect.gen(function* () {
      const bus = yield* ScriptedNats
      yield* makeProbeResponder({ workerId: WorkerId.make("w1"), active: () => 1 })
      yield* bus.inject(Subjects.probe("w1"), { workerId: "w1" })
      expect((yield* bus.published).length).toBe(0)
      yield* bus.inject(Subjects.probe("w1"), "not json", "_INBOX.x")
      expect(yield* bus.publishedOn("_INBOX.x")).toEqual([{ workerId: "w1", active: 1 }])
    }).pipe(Effect.scoped, Effect.provide(ScriptedNats.layer))
  )
})

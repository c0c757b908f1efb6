import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, TestClock } from "effect"
import { WorkerId } from "../../src/domain/ids.js"
import { Subjects } from "../../src/domain/subjects.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { makeProbeResponder } from "../../src/worker/probe-responder.js"
import { ensureWorkerIdFree, ID_CHECK_TIMEOUT_MS } from "../../src/worker/worker-id-guard.js"
import { ScriptedNats } from "../support/scripted-nats.js"

const id = WorkerId.make("studio-1")

describe("worker id guard: a starting worker refuses an id another live worker answers for", () => {
  it.effect("nobody answers the id's probe: the id is free", () =>
    Effect.gen(function* () {
      // Another worker's responder is not this id's.
      yield* makeProbeResponder({ workerId: WorkerId.make("studio-2"), active: () => 0 })
      yield* ensureWorkerIdFree(id)
      expect(yield* Effect.flatMap(ScriptedNats, (bus) => bus.published)).toEqual([])
    }).pipe(Effect.scoped, Effect.provide(ScriptedNats.layer))
  )

  it.effect("a live worker answers: WorkerIdInUse, saying what to change", () =>
    Effect.gen(function* () {
      yield* makeProbeResponder({ workerId: id, active: () => 3 })
      const error = yield* Effect.flip(ensureWorkerIdFree(id))
      expect(error).toMatchObject({ _tag: "WorkerIdInUse", workerId: "studio-1" })
      expect(error.message).toContain("worker id studio-1 is taken")
      expect(error.message).toContain("worker.studio-1.probe")
      expect(error.message).toContain("--worker-id")
    }).pipe(Effect.scoped, Effect.provide(ScriptedNats.layer))
  )

  it.effect("a listener that never answers (a hung worker, a bus refusing the probe): free once the timeout passes", () =>
    Effect.gen(function* () {
      const nats = yield* NatsTransport
      nats.listen(Subjects.probe(id), () => {})
      const check = yield* Effect.fork(ensureWorkerIdFree(id))
      yield* TestClock.adjust(ID_CHECK_TIMEOUT_MS - 1)
      expect(check.unsafePoll()).toBeNull()
      yield* TestClock.adjust(1)
      yield* Fiber.join(check)
    }).pipe(Effect.provide(ScriptedNats.layer))
  )

  it.effect("an answer that is not a probe reply: someone holds the id all the same (every probe's rule), taken", () =>
    Effect.gen(function* () {
      const nats = yield* NatsTransport
      nats.listen(Subjects.probe(id), (message) => {
        if (message.reply !== undefined) nats.send(message.reply, new TextEncoder().encode('{"hello":"world"}'))
      })
      expect(yield* Effect.flip(ensureWorkerIdFree(id))).toMatchObject({ _tag: "WorkerIdInUse", workerId: "studio-1" })
    }).pipe(Effect.provide(ScriptedNats.layer))
  )
})

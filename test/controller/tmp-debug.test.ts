import { it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import { Router } from "../../src/controller/router.js"
import { consume, controllerConfig, settle, withRouter } from "./support/router-harness.js"
import { startWorker } from "./support/scripted-workers.js"

it.effect("debug", () =>
  withRouter(controllerConfig({ firstTokenTimeoutMs: 5_000 }))(
    Effect.gen(function* () {
      const w1 = yield* startWorker({ id: "w1" })
      const router = yield* Router
      const c = yield* consume(router.route({ model: "m/Model-7B", prompt: "x", maxTokens: 3 }))
      console.log("A")
      const req = yield* w1.nextRequest
      console.log("B", req.requestId)
      yield* settle
      console.log("C")
      yield* TestClock.adjust(4_999)
      console.log("D")
      yield* settle
      console.log("E", Option.isNone(yield* Fiber.poll(c.fiber)))
      yield* TestClock.adjust(1)
      console.log("F")
      const exit = yield* c.exit
      console.log("G", exit)
      const x = yield* w1.nextCancel
      console.log("H", x)
    })
  ), 5000
)

import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { Balancer } from "../../src/controller/balancer.js"
import { Registry } from "../../src/controller/registry.js"
import { Router } from "../../src/controller/router.js"
import type { RelayEvent, RouteRequest } from "../../src/domain/route.js"
import type { ChatMessage } from "../../src/domain/inference.js"
import { Reply, startWorker, streams } from "./support/scripted-workers.js"
import { withRouter } from "./support/router-harness.js"

/**
 * The Router's prefix-affinity hook (issue 16): the request's chain goes into selection, and is
 * recorded for the worker that accepted the request (not for one that refused it).
 */

const MODEL = "m/Model-7B"
const text = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ")
const system: ChatMessage = { role: "system", content: text("rules", 200) }

const turns = (conversation: string, n: number, first: ChatMessage = system): ReadonlyArray<ChatMessage> => {
  const out: Array<ChatMessage> = [first]
  for (let t = 1; t <= n; t++) {
    if (t > 1) out.push({ role: "assistant", content: text(`${conversation}-a${t}-`, 40) })
    out.push({ role: "user", content: text(`${conversation}-u${t}-`, 30) })
  }
  return out
}

const servedBy = (messages: ReadonlyArray<ChatMessage>) =>
  Effect.gen(function* () {
    const router = yield* Router
    const request: RouteRequest = { model: MODEL, messages, maxTokens: 4 }
    const events = Chunk.toReadonlyArray(yield* Stream.runCollect(router.route(request)))
    const done = events.at(-1) as Extract<RelayEvent, { type: "done" }>
    return done.workerId
  })

describe("Router: prefix affinity", () => {
  it.effect("every turn of a conversation goes to the worker that accepted its first turn", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* startWorker({ id: "w1" }, { stream: streams("ok") })
        yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        // One turn after the other, nothing else in flight: round robin alone would alternate w1, w2.
        const a: Array<string> = []
        for (let t = 1; t <= 4; t++) a.push(yield* servedBy(turns("a", t)))
        expect(a).toEqual(["w1", "w1", "w1", "w1"])
        // Another conversation with nothing in common starts by round robin, then sticks too.
        const other: ChatMessage = { role: "system", content: text("other", 100) }
        const b: Array<string> = []
        for (let t = 1; t <= 4; t++) b.push(yield* servedBy(turns("b", t, other)))
        expect(b).toEqual(["w2", "w2", "w2", "w2"])
      })
    )
  )

  it.effect("a worker that refused is not recorded: the retry's worker holds the prompt", () =>
    withRouter()(
      Effect.gen(function* () {
        yield* startWorker({ id: "w1" }, { reply: () => Reply.refuse("busy"), stream: streams("ok") })
        yield* startWorker({ id: "w2" }, { stream: streams("ok") })
        expect(yield* servedBy(turns("a", 1))).toBe("w2")
        const balancer = yield* Balancer
        const chain = balancer.affinity.chainOf({ model: MODEL, messages: turns("a", 2) })
        const workers = yield* Effect.flatMap(Registry, (r) => r.all)
        const input = yield* balancer.affinity.selectionInput(chain, workers)
        const turn1Blocks = Math.floor((1 + 200 + 1 + 30) / 16)
        expect([...(input?.matches ?? new Map()).entries()]).toEqual([["w2", turn1Blocks * 16]])
      })
    )
  )
})

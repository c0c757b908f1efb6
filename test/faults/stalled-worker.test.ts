import { expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Registry } from "../../src/controller/registry.js"
import { baseUrl, controllerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { startFakeWorker } from "../support/fake-worker.js"
import { request } from "../support/fault-cluster.js"
import { useFaultHarness } from "../support/fault-harness.js"

const IDLE_TIMEOUT_MS = 1_000

const harness = useFaultHarness()

it.scopedLive(
  "a worker that stalls after its first token: the SSE stream ends with a stream_idle_timeout error chunk at the limit, and the worker gets a cancel",
  () =>
    Effect.gen(function* () {
      const context = yield* Layer.build(
        controllerLayer(harness.nats().url, (c) => ({ ...c, controller: { ...c.controller, streamIdleTimeoutMs: IDLE_TIMEOUT_MS } }))
      )
      const url = yield* Effect.provide(baseUrl, context)
      const registry = Context.get(context, Registry)
      const worker = yield* startFakeWorker(harness.nats().url, { id: "stall", models: ["stall/model"] }, (r, send) =>
        send({ type: "token", requestId: r.requestId, index: 0, token: "first" }).pipe(Effect.zipRight(Effect.never))
      )
      yield* eventually(Effect.map(registry.online, (ws) => ws.some((w) => w.workerId === "stall")), { timeoutMs: 10_000 })

      const result = yield* Effect.promise(() =>
        request(
          `${url}/v1/chat/completions`,
          { model: "stall/model", messages: [{ role: "user", content: "hello" }], max_tokens: 10, stream: true },
          { signal: AbortSignal.timeout(10_000) }
        )
      )
      const silentMs = result.endedAt - (result.firstChunkAt ?? result.startedAt)
      const requestId = (yield* worker.requests)[0]?.requestId
      yield* eventually(Effect.map(worker.cancels, (cs) => cs.some((c) => c.requestId === requestId)), { timeoutMs: 5_000 })
      const cancel = (yield* worker.cancels).find((c) => c.requestId === requestId)
      console.log(
        `stalled worker: error chunk "${result.error?.code}" ${silentMs} ms after the first token (limit ${IDLE_TIMEOUT_MS} ms), ` +
          `cancel at the worker ${(cancel?.at ?? 0) - result.endedAt} ms after the client saw the error`
      )

      expect(result).toMatchObject({ status: 200, thrown: undefined, text: "first", done: false, afterEnd: 0 })
      expect(result.error).toMatchObject({ code: "stream_idle_timeout", type: "timeout_error" })
      expect(silentMs).toBeGreaterThanOrEqual(IDLE_TIMEOUT_MS - 50)
      expect(silentMs).toBeLessThan(IDLE_TIMEOUT_MS + 500)
      expect((yield* worker.cancels).map((c) => c.requestId)).toEqual([requestId])
    }),
  30_000
)

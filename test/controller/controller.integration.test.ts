import { describe, expect, inject, it } from "@effect/vitest"
import { Chunk, Context, Effect, Either, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { ControllerLifecycle } from "../../src/controller/lifecycle.js"
import { Registry } from "../../src/controller/registry.js"
import { RequestStats } from "../../src/controller/request-stats.js"
import { Router } from "../../src/controller/router.js"
import type { RelayEvent, RouteRequest } from "../../src/domain/route.js"
import { controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { spawnCli, stopCli } from "../support/cli-process.js"
import { flatten } from "./support/router-harness.js"
import { startFakeWorker, streamTokens } from "../support/fake-worker.js"

const natsUrl = inject("natsUrl")

const ask = (model: string, maxTokens = 8): RouteRequest => ({
  model,
  messages: [{ role: "user", content: "one two three" }],
  maxTokens
})

/** Builds a controller in the current scope and returns its services. */
const startController = (patch?: Parameters<typeof controllerLayer>[1]) =>
  Layer.build(controllerLayer(natsUrl, patch)).pipe(
    Effect.map((context) => ({
      router: Context.get(context, Router),
      registry: Context.get(context, Registry),
      stats: Context.get(context, RequestStats),
      lifecycle: Context.get(context, ControllerLifecycle)
    }))
  )

const onlineIds = (registry: Registry) =>
  Effect.map(registry.online, (ws): ReadonlyArray<string> => ws.map((w): string => w.workerId).sort())

const collect = (stream: Stream.Stream<RelayEvent, unknown>) =>
  Effect.map(Stream.runCollect(stream), (chunk) => Chunk.toReadonlyArray(chunk).flatMap(flatten))

describe("controller core with real workers over a real nats-server", () => {
  it.scopedLive("three workers register within 100 ms of starting", () =>
    Effect.gen(function* () {
      const { registry } = yield* startController()
      const started = Date.now()
      yield* Effect.forEach(["reg-1", "reg-2", "reg-3"], (id) => Layer.build(workerLayer(natsUrl, { id, models: ["reg/model"] })), {
        concurrency: "unbounded"
      })
      const built = Date.now()
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.length === 3), { timeoutMs: 2_000 })
      expect(Date.now() - built).toBeLessThan(100)
      expect(yield* onlineIds(registry)).toEqual(["reg-1", "reg-2", "reg-3"])
      expect(built - started).toBeLessThan(5_000)
    })
  )

  it.scopedLive("relays tokens in order with correct usage; an unknown model is ModelNotFound", () =>
    Effect.gen(function* () {
      const { router, registry, stats } = yield* startController()
      yield* Layer.build(workerLayer(natsUrl, { id: "relay-1", models: ["relay/model"] }))
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("relay-1")))
      const events = yield* collect(router.route(ask("relay/model", 12)))
      const tokens = events.filter((e) => e.type === "token")
      expect(tokens.map((t) => t.index)).toEqual(tokens.map((_, i) => i))
      const done = events[events.length - 1]
      expect(done?.type).toBe("done")
      if (done?.type !== "done") return
      expect(done.usage).toEqual({ promptTokens: 3, completionTokens: tokens.length })
      expect(done.workerId).toBe("relay-1")
      const failure = yield* Effect.flip(Stream.runDrain(router.route(ask("no/such-model"))))
      expect(failure._tag).toBe("ModelNotFound")
      expect(failure.message).toContain("no/such-model")
      const s = yield* stats.snapshot
      expect(s).toMatchObject({ succeeded: 1, failed: 1, active: 0 })
    })
  )

  it.scopedLive("a busy refusal moves the request to another worker", () =>
    Effect.gen(function* () {
      const { router, registry } = yield* startController()
      const busy = yield* startFakeWorker(
        natsUrl,
        { id: "busy-1", models: ["busy/model"], reply: () => ({ accepted: false, reason: "busy", message: "full" }) },
        streamTokens(["never"])
      )
      const good = yield* startFakeWorker(natsUrl, { id: "busy-2", models: ["busy/model"] }, streamTokens(["a", "b"]))
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("busy-1") && ids.includes("busy-2")))
      for (let i = 0; i < 4; i++) {
        const events = yield* collect(router.route(ask("busy/model")))
        expect(events.map((e) => (e.type === "token" ? e.token : e.type === "done" ? e.workerId : "toolCall"))).toEqual(["a", "b", "busy-2"])
      }
      expect((yield* busy.requests).length).toBeGreaterThan(0)
      expect((yield* good.requests).length).toBe(4)
    })
  )

  it.scopedLive("a stalled worker hits the inactivity timeout and receives a cancel", () =>
    Effect.gen(function* () {
      const { router, registry } = yield* startController((c) => ({
        ...c,
        controller: { ...c.controller, streamIdleTimeoutMs: 300 }
      }))
      const stalled = yield* startFakeWorker(natsUrl, { id: "stall-1", models: ["stall/model"] }, (request, send) =>
        send({ type: "tokens", requestId: request.requestId, index: 0, tokens: ["first"] }).pipe(Effect.zipRight(Effect.never))
      )
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("stall-1")))
      const started = Date.now()
      const tokens: Array<string> = []
      const error = yield* Effect.flip(
        Stream.runForEach(router.route(ask("stall/model")), (e) =>
          Effect.sync(() => {
            if (e.type === "tokens") tokens.push(...e.tokens)
          })
        )
      )
      const elapsed = Date.now() - started
      expect(tokens).toEqual(["first"])
      expect(error).toMatchObject({ _tag: "InferenceTimeout", phase: "stream_idle", timeoutMs: 300 })
      expect(elapsed).toBeGreaterThanOrEqual(290)
      expect(elapsed).toBeLessThan(2_000)
      yield* eventually(Effect.map(stalled.cancels, (c) => c.length === 1))
    })
  )

  it.scopedLive("interrupting the consumer delivers a cancel to the worker", () =>
    Effect.gen(function* () {
      const { router, registry, stats } = yield* startController()
      const slow = yield* startFakeWorker(
        natsUrl,
        { id: "cancel-1", models: ["cancel/model"] },
        streamTokens(Array.from({ length: 50 }, (_, i) => `t${i}`), 20)
      )
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("cancel-1")))
      const firstTwo = yield* collect(Stream.take(router.route(ask("cancel/model")), 2))
      expect(firstTwo.map((e) => (e.type === "token" ? e.token : ""))).toEqual(["t0", "t1"])
      yield* eventually(Effect.map(slow.cancels, (c) => c.length === 1))
      const [request] = yield* slow.requests
      expect((yield* slow.cancels)[0]?.requestId).toBe(request?.requestId)
      expect(yield* stats.snapshot).toMatchObject({ cancelled: 1, failed: 0, active: 0 })
    })
  )

  it.scopedLive("a restarted controller sees every worker again within a second", () =>
    Effect.gen(function* () {
      yield* Effect.forEach(["again-1", "again-2", "again-3"], (id) =>
        Layer.build(workerLayer(natsUrl, { id, models: ["again/model"] }))
      )
      const first = yield* Scope.make()
      const before = yield* Scope.extend(startController(), first)
      yield* eventually(Effect.map(onlineIds(before.registry), (ids) => ids.filter((i) => i.startsWith("again-")).length === 3))
      yield* Scope.close(first, Exit.void)
      const restarted = Date.now()
      const after = yield* startController()
      yield* eventually(
        Effect.map(onlineIds(after.registry), (ids) => ids.filter((i) => i.startsWith("again-")).length === 3),
        { timeoutMs: 1_000 }
      )
      expect(Date.now() - restarted).toBeLessThan(1_000)
      const events = yield* collect(after.router.route(ask("again/model", 3)))
      expect(events[events.length - 1]?.type).toBe("done")
    })
  )

  it.scopedLive("draining lets an in-flight stream finish and refuses new requests", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const { router, registry, lifecycle, stats } = yield* Scope.extend(startController(), scope)
      yield* startFakeWorker(
        natsUrl,
        { id: "drain-1", models: ["drain/model"] },
        streamTokens(Array.from({ length: 10 }, (_, i) => `d${i}`), 30)
      )
      yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("drain-1")))
      const inFlight = yield* Effect.fork(collect(router.route(ask("drain/model"))))
      yield* eventually(Effect.map(stats.snapshot, (s) => s.active === 1))
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* eventually(Effect.map(lifecycle.state, (s) => s === "draining"))
      const refused = yield* Effect.flip(Stream.runDrain(router.route(ask("drain/model"))))
      expect(refused._tag).toBe("ShuttingDown")
      const events = yield* Fiber.join(inFlight)
      expect(events.filter((e) => e.type === "token")).toHaveLength(10)
      expect(events[events.length - 1]?.type).toBe("done")
      yield* Fiber.join(closing)
      expect(yield* lifecycle.state).toBe("stopped")
    })
  )

  it.live("a killed worker (SIGKILL) fails none of the requests dispatched after the kill", () =>
    Effect.gen(function* () {
      const killed = spawnCli(["--mode", "worker", "--nats-url", natsUrl, "--worker-id", "kill-1"], {
        MODEL_DIR: "/nonexistent-model-dir"
      })
      const result = yield* Effect.scoped(
        Effect.gen(function* () {
          const { router, registry } = yield* startController()
          yield* Layer.build(workerLayer(natsUrl, { id: "kill-2", models: [] }))
          yield* Effect.promise(() => killed.waitFor(/worker kill-1 registered/))
          yield* eventually(Effect.map(onlineIds(registry), (ids) => ids.includes("kill-1") && ids.includes("kill-2")))
          killed.process.kill("SIGKILL")
          yield* Effect.promise(() => killed.exited)
          // Every request after the kill must succeed: the dead worker gets "no responders" and is skipped.
          const outcomes = yield* Effect.forEach(
            Array.from({ length: 20 }, () => ask("synthetic/demo", 4)),
            (request) => Effect.either(collect(router.route(request))),
            { concurrency: 4 }
          )
          const kill1 = yield* registry.get("kill-1")
          return { failures: outcomes.filter(Either.isLeft), kill1 }
        })
      ).pipe(Effect.ensuring(Effect.promise(() => stopCli(killed))))
      expect(result.failures).toEqual([])
      expect(Option.getOrThrow(result.kill1)).toMatchObject({ status: "offline", statusReason: "no responders" })
    }),
    60_000
  )
})

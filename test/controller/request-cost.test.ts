import { expect, inject, it } from "@effect/vitest"
import { Context, Effect, Fiber as EffectFiber, Layer, Option, RuntimeFlags, Supervisor } from "effect"
import type * as Fiber from "effect/Fiber"
import type { ClusterConfig } from "../../src/config/schema.js"
import { Registry } from "../../src/controller/registry.js"
import { RequestStats } from "../../src/controller/request-stats.js"
import { NatsTransport } from "../../src/nats/nats-transport.js"
import { baseUrl, controllerLayer, workerLayer } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"

/**
 * Issue 10: the cost of a request is a small constant, pinned here deterministically (not timed).
 * A streamed request of 32 tokens, from the synthetic engine at full speed (one group of 32), costs:
 * - fibers: one in the controller (the Router's `execute`, forked by the HTTP fast lane) and one in
 *   the worker (the request's generation) — nothing per token, no watchdog, no pump;
 * - Effect operations in those fibers (what the runtime evaluates, counted with op supervision):
 *   61 in the controller's, 39 in the worker's — a change that adds or removes some updates these
 *   figures on purpose;
 * - bus messages: the controller sends 1 (the inference request) and receives 3 (the ack, one
 *   `tokens` batch, `done`); the worker receives 1 and sends the same 3.
 */

const natsUrl = inject("natsUrl")
const MODEL = "cost/model"
const REQUESTS = 20

/**
 * Counts the fibers started under it, and keeps the last one; with `RuntimeFlags.enableOpSupervision`
 * also the Effect operations each of them evaluates.
 */
class FiberCounter extends Supervisor.AbstractSupervisor<number> {
  started = 0
  last: Fiber.RuntimeFiber<unknown, unknown> | undefined
  readonly fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
  readonly ops = new Map<Fiber.RuntimeFiber<unknown, unknown>, number>()
  get value() {
    return Effect.sync(() => this.started)
  }
  override onStart<A, E, R>(
    _context: Context.Context<R>,
    _effect: Effect.Effect<A, E, R>,
    _parent: Option.Option<Fiber.RuntimeFiber<unknown, unknown>>,
    fiber: Fiber.RuntimeFiber<A, E>
  ): void {
    this.started++
    this.last = fiber
    this.fibers.push(fiber)
  }
  override onEffect<A, E>(fiber: Fiber.RuntimeFiber<A, E>): void {
    this.ops.set(fiber, (this.ops.get(fiber) ?? 0) + 1)
  }
  /** The different counts of operations of the fibers started from the `from`-th on, smallest first. */
  opsFrom(from: number): ReadonlyArray<number> {
    return [...new Set(this.fibers.slice(from).map((fiber) => this.ops.get(fiber) ?? 0))].sort((a, b) => a - b)
  }
}

// Slow heartbeats and sweeps: nothing but the requests on the bus, and no other fiber, while they are counted.
const quiet = (c: Parameters<Parameters<typeof controllerLayer>[1] & {}>[0]) => ({
  ...c,
  discovery: { ...c.discovery, heartbeatIntervalMs: 600_000, healthCheckIntervalMs: 600_000, offlineTimeoutMs: 1_200_000 }
})

// Each built in a fiber of its own (awaited, not joined): a supervisor set while building one
// must not reach the other's runtime.
const isolated = <A, E>(layer: Layer.Layer<A, E>) => Effect.forkScoped(Layer.build(layer)).pipe(Effect.flatMap(EffectFiber.await), Effect.flatten)

it.scopedLive(
  "a streamed request of 32 tokens starts one fiber in the controller and one in the worker, runs 61 and 39 Effect operations in them, and crosses the bus as 1 + 3 messages",
  () =>
    Effect.gen(function* () {
      const controllerFibers = new FiberCounter()
      const workerFibers = new FiberCounter()
      const counted = (counter: FiberCounter) => Layer.provide(Layer.merge(Supervisor.addSupervisor(counter), RuntimeFlags.enableOpSupervision))
      const controller = yield* isolated(controllerLayer(natsUrl, quiet).pipe(counted(controllerFibers)))
      // The worker's heartbeats as slow: the window counts every message the controller receives.
      const slowBeats = (config: ClusterConfig) => ({ ...config, discovery: { ...config.discovery, heartbeatIntervalMs: 600_000 } })
      yield* isolated(workerLayer(natsUrl, { id: "cost-worker", models: [MODEL], patch: slowBeats }).pipe(counted(workerFibers)))
      const registry = Context.get(controller, Registry)
      yield* eventually(Effect.map(registry.get("cost-worker"), Option.exists((w) => w.status === "online")))
      const url = yield* Effect.provide(baseUrl, controller)
      const controllerBus = Context.get(controller, NatsTransport)

      const stream = Effect.promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: MODEL, stream: true, max_tokens: 32, messages: [{ role: "user", content: "count me" }] })
        }).then((r) => r.text())
      )
      // Warm up (first-use compilation, lazy subscriptions), then count over sequential requests.
      const stats = Context.get(controller, RequestStats)
      yield* stream
      yield* eventually(Effect.map(stats.snapshot, (s) => s.active === 0 && s.total === 1))
      const fibersBefore = [controllerFibers.started, workerFibers.started]
      const busBefore = controllerBus.stats()
      for (let i = 0; i < REQUESTS; i++) {
        const body = yield* stream
        expect(body.match(/"delta":\{"content":/g)).toHaveLength(32)
        expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true)
      }
      // Every count is complete when the last client saw [DONE] (the worker published `done` before);
      // waiting for equality only absorbs scheduling, and a count past it never comes back down.
      const perRequest = Effect.sync(() => {
        const bus = controllerBus.stats()
        return {
          controllerFibers: (controllerFibers.started - (fibersBefore[0] ?? 0)) / REQUESTS,
          workerFibers: (workerFibers.started - (fibersBefore[1] ?? 0)) / REQUESTS,
          sent: (bus.outMsgs - busBefore.outMsgs) / REQUESTS,
          received: (bus.inMsgs - busBefore.inMsgs) / REQUESTS,
          // Every request fiber's own count: one figure when they all ran the same operations.
          controllerOps: controllerFibers.opsFrom(fibersBefore[0] ?? 0),
          workerOps: workerFibers.opsFrom(fibersBefore[1] ?? 0)
        }
      })
      const expected = { controllerFibers: 1, workerFibers: 1, sent: 1, received: 3, controllerOps: [61], workerOps: [39] }
      yield* eventually(perRequest.pipe(Effect.map((counts) => expect(counts).toEqual(expected))), { timeoutMs: 1_000 })
    }),
  60_000
)

/**
 * What a stream in flight holds in its fiber: the frames of its stack (continuations and the flags
 * to restore), each with its closures, for the stream's whole life. Read from the runtime's private
 * `_stack`: an upgrade of Effect that renames it fails here, and the figure is then measured again
 * (`npm run bench -- --scenario held`).
 */
const stackOf = (fiber: Fiber.RuntimeFiber<unknown, unknown>): ReadonlyArray<{ readonly _op?: string }> => {
  const stack = (fiber as unknown as { readonly _stack?: ReadonlyArray<{ readonly _op?: string }> })._stack
  if (stack === undefined) throw new Error("FiberRuntime has no _stack: measure the held memory again")
  return stack
}

it.scopedLive("a stream waiting for its next token holds 4 frames on its fiber's stack, none of them a generator's", () =>
  Effect.gen(function* () {
    const controllerFibers = new FiberCounter()
    const controller = yield* isolated(controllerLayer(natsUrl, quiet).pipe(Layer.provide(Supervisor.addSupervisor(controllerFibers))))
    yield* isolated(workerLayer(natsUrl, { id: "frames-worker", models: ["frames/model"], tokensPerSecond: 2 }))
    const registry = Context.get(controller, Registry)
    yield* eventually(Effect.map(registry.get("frames-worker"), Option.exists((w) => w.status === "online")))
    const url = yield* Effect.provide(baseUrl, controller)
    const before = controllerFibers.started
    const abort = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => abort.abort()))
    // The first chunk read: the request's fiber now waits for the worker's next token.
    yield* Effect.promise(async () => {
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "frames/model", stream: true, max_tokens: 8, messages: [{ role: "user", content: "slowly" }] }),
        signal: abort.signal
      })
      await response.body?.getReader().read()
    })
    expect(controllerFibers.started - before).toBe(1)
    const fiber = controllerFibers.last
    if (fiber === undefined) throw new Error("no request fiber")
    const stack = stackOf(fiber)
    expect(stack.length).toBe(4)
    // Effect runs a generator (`Effect.gen`, `Effect.fn`) in an `Iterator` frame, which keeps the
    // generator object, its register file and Effect's adapters: about 0.4 KB each.
    expect(stack.map((frame) => frame._op)).not.toContain("Iterator")
  }),
  30_000
)

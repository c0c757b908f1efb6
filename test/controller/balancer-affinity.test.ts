import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Metric } from "effect"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { AffinityConfig, BalancingStrategy } from "../../src/config/schema.js"
import { makeAffinityTracker } from "../../src/controller/affinity-tracker.js"
import { Balancer, selectWorker } from "../../src/controller/balancer.js"
import * as Metrics from "../../src/controller/metrics.js"
import type { AffinityInput } from "../../src/controller/prefix-affinity.js"
import { type PromptChain, promptChain } from "../../src/domain/prompt-chain.js"
import type { WorkerInfo } from "../../src/domain/worker.js"
import { info, stateOf } from "./support/fixtures.js"

const M7 = "m/Model-7B" // the fixtures' default model
const M13 = "mlx-community/Llama-2-13B-chat-4bit"
const settings = { minPrefixTokens: 64, maxImbalance: 2 }
const noInFlight: ReadonlyMap<string, number> = new Map()
const input = (matches: Record<string, number>, sent: Record<string, number> = {}): AffinityInput => ({
  matches: new Map(Object.entries(matches)),
  recentDispatches: new Map(Object.entries(sent)),
  settings
})
const chosen = (result: ReturnType<typeof selectWorker>) => Either.getOrThrow(result).worker.workerId
/** `selectWorker` with the load of the controller before other controllers: in-flight or reported, whichever is more. */
const select = (
  strategy: BalancingStrategy,
  request: Parameters<typeof selectWorker>[1],
  workers: ReadonlyArray<WorkerInfo>,
  inFlight: ReadonlyMap<string, number>,
  last: string | undefined,
  affinity?: AffinityInput
) =>
  selectWorker(
    strategy,
    request,
    workers,
    (w) => Math.max(inFlight.get(w.workerId) ?? 0, w.metrics?.requests.active ?? 0),
    last,
    undefined,
    affinity
  )

// ---------------------------------------------------------------------------------------------
// A small chat workload: conversations over a few shared system prompts.

/** Deterministic words: `n` of them, named after `tag`. */
const words = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ")

interface Message {
  readonly role: string
  readonly content: string
}

/** The messages of `conversation` at `turn` (1-based): its persona's system prompt, then the turns so far. */
const messagesAt = (conversation: number, turn: number): ReadonlyArray<Message> => {
  const out: Array<Message> = [{ role: "system", content: words(`persona${conversation % 4}-`, 300) }]
  for (let t = 1; t <= turn; t++) {
    if (t > 1) out.push({ role: "assistant", content: words(`c${conversation}t${t - 1}a`, 80) })
    out.push({ role: "user", content: words(`c${conversation}t${t}u`, 40) })
  }
  return out
}

describe("selectWorker with prefix affinity (pure)", () => {
  const workers = ["a", "b", "c"].map((id) => info({ id }))

  it("smart prefers the worker holding the longest prefix, over round robin and a slightly higher load", () => {
    expect(chosen(select("smart", { model: M7 }, workers, noInFlight, undefined, input({ b: 640, c: 128 })))).toBe("b")
    expect(chosen(select("smart", { model: M7 }, workers, noInFlight, "b", input({ b: 640 })))).toBe("b")
    const busyB = new Map([["b", 2]])
    expect(chosen(select("smart", { model: M7 }, workers, busyB, undefined, input({ b: 640 })))).toBe("b")
    // Without affinity input: least load, then round robin.
    expect(chosen(select("smart", { model: M7 }, workers, busyB, undefined))).toBe("a")
  })

  it("a worker more than max_imbalance above the least loaded loses: least load decides", () => {
    const hot = new Map([["b", 3]])
    expect(chosen(select("smart", { model: M7 }, workers, hot, undefined, input({ b: 640 })))).toBe("a")
    // The next best match within the margin wins over plain least load.
    expect(chosen(select("smart", { model: M7 }, workers, hot, undefined, input({ b: 640, c: 128 })))).toBe("c")
  })

  it("comes after memory fit and capacity: a matching worker too small for the model, or full, is not chosen", () => {
    const small = info({ id: "small", models: [M13], gpuMemoryGB: 8 })
    const big = info({ id: "big", models: [M13], gpuMemoryGB: 32 })
    expect(chosen(select("smart", { model: M13 }, [small, big], noInFlight, undefined, input({ small: 640 })))).toBe("big")
    const full = info({ id: "full", maxConcurrent: 1, active: 1 })
    const free = info({ id: "free" })
    expect(chosen(select("smart", { model: M7 }, [full, free], noInFlight, undefined, input({ full: 640 })))).toBe("free")
  })

  it("a prompt no worker holds goes to the least loaded worker sent the fewest requests recently, before round robin", () => {
    const sent = { a: 3, b: 1, c: 2 }
    expect(chosen(select("smart", { model: M7 }, workers, noInFlight, undefined, input({}, sent)))).toBe("b")
    expect(chosen(select("smart", { model: M7 }, workers, new Map([["b", 1]]), undefined, input({}, sent)))).toBe("c")
    // Shared by all (a system prompt): the same.
    expect(chosen(select("smart", { model: M7 }, workers, noInFlight, undefined, input({ a: 400, b: 400, c: 400 }, sent)))).toBe("b")
  })

  it("round_robin and least_loaded ignore it", () => {
    expect(chosen(select("round_robin", { model: M7 }, workers, noInFlight, undefined, input({ c: 640 })))).toBe("a")
    expect(chosen(select("least_loaded", { model: M7 }, workers, new Map([["a", 1]]), undefined, input({ c: 640 })))).toBe(
      "b"
    )
  })
})

const affinityConfig = (patch: Partial<AffinityConfig> = {}) => (strategy: BalancingStrategy) =>
  Balancer.Default.pipe(
    Layer.provide(
      ClusterConfigService.layerTest((c) => ({
        ...c,
        loadBalancing: { strategy, affinity: { ...c.loadBalancing.affinity, ...patch } }
      }))
    )
  )

/** One turn through the Balancer service as the Router makes it: select with the chain, then record. */
const dispatch = (chain: PromptChain | undefined, workers: ReadonlyArray<WorkerInfo>, inFlight: ReadonlyMap<string, number>) =>
  Effect.gen(function* () {
    const balancer = yield* Balancer
    const load = (w: WorkerInfo) => Math.max(inFlight.get(w.workerId) ?? 0, w.metrics?.requests.active ?? 0)
    const { worker } = Either.getOrThrow(balancer.select({ model: M7, prompt: chain }, stateOf(workers), load))
    if (chain !== undefined) yield* balancer.affinity.recordDispatch(worker.workerId, chain)
    return worker.workerId
  })

const chainOf = (conversation: number, turn: number) =>
  Effect.map(Balancer, (b) => b.affinity.chainOf({ model: M7, messages: messagesAt(conversation, turn) }))

describe("Balancer service with prefix affinity", () => {
  const four = ["w1", "w2", "w3", "w4"].map((id) => info({ id }))

  it.effect("same conversation → same worker while load is balanced; conversations still spread evenly", () =>
    Effect.gen(function* () {
      const homes = new Map<number, Array<string>>()
      for (let turn = 1; turn <= 6; turn++) {
        for (let conversation = 0; conversation < 8; conversation++) {
          const id = yield* dispatch(yield* chainOf(conversation, turn), four, noInFlight)
          homes.set(conversation, [...(homes.get(conversation) ?? []), id])
        }
      }
      for (const ids of homes.values()) expect(new Set(ids).size).toBe(1)
      const perWorker = new Map<string, number>()
      for (const ids of homes.values()) perWorker.set(ids[0] as string, (perWorker.get(ids[0] as string) ?? 0) + 1)
      expect([...perWorker.values()]).toEqual([2, 2, 2, 2])
    }).pipe(Effect.provide(affinityConfig()("smart")))
  )

  it.effect("a hot worker past the margin loses new conversations and, past it, its own", () =>
    Effect.gen(function* () {
      // Conversation 0 (persona 0) lives on w1.
      expect(yield* dispatch(yield* chainOf(0, 1), four, noInFlight)).toBe("w1")
      // w1 has 2 more in flight than the rest: within the margin, the conversation stays...
      expect(yield* dispatch(yield* chainOf(0, 2), four, new Map([["w1", 2]]))).toBe("w1")
      // ... and a new conversation of the same persona follows its system prompt there too.
      expect(yield* dispatch(yield* chainOf(4, 1), four, new Map([["w1", 2]]))).toBe("w1")
      // 3 more: past the margin. New conversations go elsewhere, and so does the next turn.
      const hot = new Map([["w1", 3]])
      const elsewhere = [yield* dispatch(yield* chainOf(8, 1), four, hot), yield* dispatch(yield* chainOf(12, 1), four, hot)]
      expect(elsewhere).not.toContain("w1")
      const moved = yield* dispatch(yield* chainOf(0, 3), four, hot)
      expect(moved).not.toBe("w1")
      // Once moved, the conversation sticks to its new worker (it now holds the longer prefix).
      expect(yield* dispatch(yield* chainOf(0, 4), four, noInFlight)).toBe(moved)
    }).pipe(Effect.provide(affinityConfig()("smart")))
  )

  it.effect("least_loaded does not route by it (but still counts hits), nor does smart with enabled: false", () =>
    Effect.gen(function* () {
      const ids: Array<string> = []
      for (let turn = 1; turn <= 4; turn++) ids.push(yield* dispatch(yield* chainOf(0, turn), four, noInFlight))
      expect(ids).toEqual(["w1", "w2", "w3", "w4"])
    }).pipe(Effect.provide(affinityConfig()("least_loaded")))
  )

  it.effect("enabled: false keeps no index and computes no chain", () =>
    Effect.gen(function* () {
      const balancer = yield* Balancer
      expect(yield* chainOf(0, 1)).toBeUndefined()
      const forced = promptChain({ model: M7, messages: messagesAt(0, 1) })
      const ids: Array<string> = []
      for (let i = 0; i < 4; i++) ids.push(yield* dispatch(forced, four, noInFlight))
      expect(ids).toEqual(["w1", "w2", "w3", "w4"])
      expect(yield* balancer.affinity.entries).toBe(0)
    }).pipe(Effect.provide(affinityConfig({ enabled: false })("smart")))
  )
})

/** An affinity tracker on the settings these tests reason with (64-token minimum prefix, 16-token blocks), `patch` laid over them. */
const trackerWith = (patch: Partial<AffinityConfig> = {}) =>
  makeAffinityTracker({ enabled: true, minPrefixTokens: 64, maxImbalance: 2, blockTokens: 16, maxBlocksPerWorker: 1000, maxAgeMs: 60_000, ...patch })

describe("affinity tracker", () => {
  const counts = Effect.all({
    hit: Metric.value(Metric.tagged(Metrics.affinityTotal, "result", "hit")),
    displaced: Metric.value(Metric.tagged(Metrics.affinityTotal, "result", "displaced")),
    miss: Metric.value(Metric.tagged(Metrics.affinityTotal, "result", "miss")),
    cached: Metric.value(Metric.tagged(Metrics.affinityPromptTokensTotal, "cached", "true")),
    uncached: Metric.value(Metric.tagged(Metrics.affinityPromptTokensTotal, "cached", "false"))
  }).pipe(
    Effect.map((s) => ({ hit: s.hit.count, displaced: s.displaced.count, miss: s.miss.count, cached: s.cached.count, uncached: s.uncached.count }))
  )

  it.effect("counts hits, displacements and misses, and the prompt tokens the chosen worker held", () =>
    Effect.gen(function* () {
      const tracker = trackerWith()
      const before = yield* counts
      const turn1 = tracker.chainOf({ model: M7, messages: messagesAt(0, 1) }) as PromptChain
      const turn2 = tracker.chainOf({ model: M7, messages: messagesAt(0, 2) }) as PromptChain
      expect(yield* tracker.recordDispatch("w1", turn1)).toBe("miss") // nobody knew anything
      expect(yield* tracker.recordDispatch("w1", turn2)).toBe("hit") // w1 knew turn 1's full blocks
      expect(yield* tracker.recordDispatch("w2", turn2)).toBe("displaced") // w1 knew more
      const after = yield* counts
      const known = Math.floor(turn1.tokens / 16) * 16
      expect(after.hit - before.hit).toBe(1)
      expect(after.displaced - before.displaced).toBe(1)
      expect(after.miss - before.miss).toBe(1)
      expect(after.cached - before.cached).toBe(known)
      expect(after.uncached - before.uncached).toBe(turn1.tokens + 2 * turn2.tokens - known)
      // Offline workers are forgotten by the next selection.
      const input = yield* tracker.selectionInput(turn2, [info({ id: "w1", status: "offline" }), info({ id: "w2" })])
      expect(input?.matches).toEqual(new Map([["w2", turn2.hashes.length * 16]]))
      expect(yield* tracker.entries).toBe(turn2.hashes.length)
      expect(yield* tracker.selectionInput(undefined, [])).toBeUndefined()
    })
  )

  it("the synchronous steps take the time as an argument, update no metric, and count verdicts for the dashboard", () => {
    const tracker = trackerWith()
    const turn1 = tracker.chainOf({ model: M7, messages: messagesAt(0, 1) }) as PromptChain
    const workers = [info({ id: "w1" }), info({ id: "w2" })]
    expect(tracker.recordDispatchAt("w1", turn1, 0)).toBe("miss")
    expect(tracker.recordDispatchAt("w1", turn1, 1_000)).toBe("hit")
    const input = tracker.selectionInputAt(turn1, workers, 1_000)
    expect(input?.matches).toEqual(new Map([["w1", turn1.hashes.length * 16]]))
    expect(input?.recentDispatches.get("w1")).toBeCloseTo(1 + Math.exp(-1_000 / 60_000))
    expect(input?.recentDispatches.get("w2")).toBe(0)
    // Past max_age_ms the prompt is forgotten.
    expect(tracker.selectionInputAt(turn1, workers, 62_000)?.matches.size).toBe(0)
    // Selecting among some candidates forgets nobody; forget and retain do.
    expect(tracker.counts()).toEqual({ hit: 1, displaced: 0, miss: 1 })
    tracker.recordDispatchAt("w2", turn1, 2_000)
    expect(tracker.counts()).toEqual({ hit: 1, displaced: 1, miss: 1 })
    expect(tracker.selectionInputAt(turn1, [info({ id: "w1" })], 2_000)?.matches.size).toBe(1)
    expect([...(tracker.selectionInputAt(turn1, workers, 2_000)?.matches.keys() ?? [])]).toEqual(["w1", "w2"])
    tracker.forget("w1")
    expect([...(tracker.selectionInputAt(turn1, workers, 2_000)?.matches.keys() ?? [])]).toEqual(["w2"])
    tracker.retain([info({ id: "w1" }), info({ id: "w2", status: "offline" })])
    expect(tracker.selectionInputAt(turn1, workers, 2_000)?.matches.size).toBe(0)
    const off = trackerWith({ enabled: false })
    expect(off.selectionInputAt(turn1, workers, 0)).toBeUndefined()
    expect(off.recordDispatchAt("w1", turn1, 0)).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------------------------
// A closed-loop simulation of the benchmark's workload through the pure functions: 200
// conversations × 6 turns, 32 at a time, over 4 workers; a request holds its worker for 1–4 ticks,
// and users may pause `think` ticks between an answer and their next turn.

interface SimResult {
  /** Turns 2..6 that landed on the previous turn's worker. */
  readonly sticky: number
  readonly perWorker: ReadonlyArray<number>
}

const simulate = (strategy: BalancingStrategy, think = 0): SimResult => {
  const workers = ["w1", "w2", "w3", "w4"].map((id) => info({ id, maxConcurrent: 64 }))
  const tracker = trackerWith({ maxBlocksPerWorker: 8192, maxAgeMs: 600_000 })
  let seed = 7
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  }
  interface Running {
    readonly conversation: number
    readonly turn: number
    readonly worker: string
    readonly endsAt: number
  }
  let running: Array<Running> = []
  /** Conversations between two turns: the next turn starts at `at`. */
  let thinking: Array<{ readonly conversation: number; readonly turn: number; readonly at: number }> = []
  const last = new Map<number, string>()
  const perWorker = new Map(workers.map((w) => [w.workerId, 0]))
  let cursor: string | undefined
  let sticky = 0
  let next = 0
  let now = 0
  const start = (conversation: number, turn: number) => {
    const inFlight = new Map<string, number>()
    for (const r of running) inFlight.set(r.worker, (inFlight.get(r.worker) ?? 0) + 1)
    const chain = tracker.chainOf({ model: M7, messages: messagesAt(conversation, turn) }) as PromptChain
    const affinity = Effect.runSync(tracker.selectionInput(chain, workers))
    const worker = chosen(select(strategy, { model: M7 }, workers, inFlight, cursor, strategy === "smart" ? affinity : undefined))
    cursor = worker
    Effect.runSync(tracker.recordDispatch(worker, chain))
    if (turn > 1 && last.get(conversation) === worker) sticky++
    last.set(conversation, worker)
    perWorker.set(worker, (perWorker.get(worker) ?? 0) + 1)
    running.push({ conversation, turn, worker, endsAt: now + 1 + Math.floor(random() * 4) })
  }
  while (next < 200 || running.length > 0 || thinking.length > 0) {
    while (running.length + thinking.length < 32 && next < 200) start(next++, 1)
    now = Math.min(...running.map((r) => r.endsAt), ...thinking.map((t) => t.at))
    const done = running.filter((r) => r.endsAt === now)
    running = running.filter((r) => r.endsAt !== now)
    for (const r of done) if (r.turn < 6) thinking.push({ conversation: r.conversation, turn: r.turn + 1, at: now + think })
    const ready = thinking.filter((t) => t.at === now)
    thinking = thinking.filter((t) => t.at !== now)
    for (const t of ready) start(t.conversation, t.turn)
  }
  return { sticky: sticky / (200 * 5), perWorker: [...perWorker.values()] }
}

describe("simulated chat workload (200 conversations × 6 turns, 4 workers)", () => {
  it("smart keeps ≥ 90 % of follow-up turns on their worker with max/min requests per worker ≤ 1.25", () => {
    // Back-to-back turns, and users pausing 3 ticks between turns (fewer requests in flight).
    for (const think of [0, 3]) {
      const smart = simulate("smart", think)
      expect(smart.sticky).toBeGreaterThanOrEqual(0.9)
      expect(Math.max(...smart.perWorker) / Math.min(...smart.perWorker)).toBeLessThanOrEqual(1.25)
      expect(smart.perWorker.reduce((a, b) => a + b, 0)).toBe(1200)
    }
  })

  it("least_loaded and round_robin land a follow-up turn on its worker about a quarter of the time", () => {
    for (const strategy of ["least_loaded", "round_robin"] as const) {
      expect(simulate(strategy).sticky).toBeLessThan(0.5)
      expect(simulate(strategy, 3).sticky).toBeLessThan(0.5)
    }
  })
})

import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer } from "effect"
import * as fc from "fast-check"
import { ClusterConfigService } from "../../src/config/cluster-config.js"
import type { BalancingStrategy } from "../../src/config/schema.js"
import {
  Balancer,
  estimateModelMemoryGB,
  memoryNeedGB,
  parseParamsBillions,
  pickRoundRobin,
  type SelectRequest,
  selectWorker,
  servedModels,
  type LoadOf
} from "../../src/controller/balancer.js"
import { ModelNotFound, NoSkilledWorker, NoWorkers } from "../../src/domain/errors.js"
import type { WorkerInfo } from "../../src/domain/worker.js"
import { info, stateOf } from "./support/fixtures.js"

const GiB = 1024 ** 3
const M7 = "m/Model-7B" // the fixtures' default model
const M3 = "mlx-community/Llama-3.2-3B-Instruct-4bit"
const M13 = "mlx-community/Llama-2-13B-chat-4bit"
const noInFlight: ReadonlyMap<string, number> = new Map()

const balancerLayer = (strategy: BalancingStrategy = "smart") =>
  Balancer.Default.pipe(
    Layer.provide(ClusterConfigService.layerTest((c) => ({ ...c, loadBalancing: { ...c.loadBalancing, strategy } })))
  )

/** A load function as the controller's was before other controllers: the larger of in-flight and reported. */
const loadFrom =
  (inFlight: ReadonlyMap<string, number>): LoadOf =>
  (w) =>
    Math.max(inFlight.get(w.workerId) ?? 0, w.metrics?.requests.active ?? 0)

const pick = (request: SelectRequest, workers: ReadonlyArray<WorkerInfo>, inFlight = noInFlight) =>
  Effect.flatMap(Balancer, (b) => b.select(request, stateOf(workers), loadFrom(inFlight)))

/** Runs `n` selections through the Balancer service (over a real registry state) and returns the chosen ids. */
const selectN = (
  n: number,
  request: SelectRequest,
  workers: ReadonlyArray<WorkerInfo>,
  inFlight: ReadonlyMap<string, number> = noInFlight
) =>
  Effect.gen(function* () {
    const ids: Array<string> = []
    for (let i = 0; i < n; i++) ids.push((yield* pick(request, workers, inFlight)).worker.workerId)
    return ids
  })

describe("model memory estimate", () => {
  it("parses the parameter count as a whole token", () => {
    expect(parseParamsBillions(M3)).toBe(3)
    expect(parseParamsBillions(M13)).toBe(13)
    expect(parseParamsBillions("llama-13b")).toBe(13)
    expect(parseParamsBillions("Qwen2.5-1.5B-Instruct")).toBe(1.5)
    expect(parseParamsBillions("gemma-2b-it")).toBe(2)
    expect(parseParamsBillions("30B")).toBe(30)
    expect(parseParamsBillions("Llama-3.2-3B-Instruct-4bit")).toBe(3)
    expect(parseParamsBillions("model-4bit")).toBeUndefined()
    expect(parseParamsBillions("synthetic/demo")).toBeUndefined()
    expect(parseParamsBillions("x-0B")).toBeUndefined()
    expect(parseParamsBillions("x-3B4")).toBeUndefined()
  })

  it("maps sizes: 3B→4, 7B→8, 13B→16, 30B→32, others params×1.2 rounded up, unknown→8", () => {
    expect(estimateModelMemoryGB(M3)).toBe(4)
    expect(estimateModelMemoryGB(M7)).toBe(8)
    expect(estimateModelMemoryGB(M13)).toBe(16)
    expect(estimateModelMemoryGB("org/Some-30B")).toBe(32)
    expect(estimateModelMemoryGB("Qwen2.5-1.5B")).toBe(2)
    expect(estimateModelMemoryGB("Llama-3.1-70B")).toBe(84)
    expect(estimateModelMemoryGB("synthetic/demo")).toBe(8)
  })

  it("13B is never read as 3B (a substring test such as includes('3B') would)", () => {
    expect(estimateModelMemoryGB("Llama-2-13B")).toBe(16)
    expect(estimateModelMemoryGB("Llama-2-13B")).not.toBe(estimateModelMemoryGB("Llama-2-3B"))
  })

  it("uses the worker's reported model size (bytes → GB × 1.2) when there is one", () => {
    const w = info({ id: "a", models: [M3], modelSizes: { [M3]: 10 * GiB } })
    expect(memoryNeedGB(w, M3)).toBeCloseTo(12)
    expect(memoryNeedGB(info({ id: "b", models: [M3] }), M3)).toBe(4)
    expect(memoryNeedGB(info({ id: "c", models: [M3], modelSizes: { [M3]: 0 } }), M3)).toBe(4)
  })

  it("servedModels is the sorted union", () => {
    expect(servedModels([info({ id: "a", models: ["z", "b"] }), info({ id: "c", models: ["b", "a"] })])).toEqual([
      "a",
      "b",
      "z"
    ])
  })
})

describe("pickRoundRobin", () => {
  const ws = ["c", "a", "b"].map((id) => info({ id }))
  it("starts with the smallest id and continues after the last one chosen, wrapping", () => {
    expect(pickRoundRobin(ws, undefined).workerId).toBe("a")
    expect(pickRoundRobin(ws, "a").workerId).toBe("b")
    expect(pickRoundRobin(ws, "b").workerId).toBe("c")
    expect(pickRoundRobin(ws, "c").workerId).toBe("a")
    expect(pickRoundRobin(ws, "bb").workerId).toBe("c") // the last one may have left the set
  })
})

describe("Balancer (smart)", () => {
  const layer = balancerLayer("smart")

  it.effect("selects only workers that serve the model (skills)", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a", models: [M3] }), info({ id: "b", models: [M7] }), info({ id: "c", models: [M3, M7] })]
      const ids = yield* selectN(6, { model: M7 }, workers)
      expect(new Set(ids)).toEqual(new Set(["b", "c"]))
    }).pipe(Effect.provide(layer))
  )

  it.effect("prefers workers with enough GPU memory, even when more loaded", () =>
    Effect.gen(function* () {
      const small = info({ id: "small", models: [M13], gpuMemoryGB: 8, active: 0 })
      const big = info({ id: "big", models: [M13], gpuMemoryGB: 32, active: 2 })
      expect(yield* selectN(3, { model: M13 }, [small, big])).toEqual(["big", "big", "big"])
    }).pipe(Effect.provide(layer))
  )

  it.effect("falls back to every skilled worker when none has enough GPU memory", () =>
    Effect.gen(function* () {
      const a = info({ id: "a", models: [M13], gpuMemoryGB: 8, active: 1 })
      const b = info({ id: "b", models: [M13], gpuMemoryGB: 8, active: 0 })
      expect((yield* pick({ model: M13 }, [a, b])).worker.workerId).toBe("b")
    }).pipe(Effect.provide(layer))
  )

  it.effect("13B vs 3B: a 13B model prefers the 16 GB worker over the 8 GB one every time", () =>
    Effect.gen(function* () {
      const eight = info({ id: "eight", models: [M13], gpuMemoryGB: 8 })
      const sixteen = info({ id: "sixteen", models: [M13], gpuMemoryGB: 16 })
      expect(yield* selectN(4, { model: M13 }, [eight, sixteen])).toEqual(["sixteen", "sixteen", "sixteen", "sixteen"])
    }).pipe(Effect.provide(layer))
  )

  it.effect("a worker's reported model size overrides the name heuristic", () =>
    Effect.gen(function* () {
      // The name says 3B (4 GB), but the files are 20 GiB → needs 24 GB.
      const small = info({ id: "a", models: [M3], gpuMemoryGB: 16, modelSizes: { [M3]: 20 * GiB } })
      const large = info({ id: "b", models: [M3], gpuMemoryGB: 32, modelSizes: { [M3]: 20 * GiB }, active: 1 })
      expect(yield* selectN(2, { model: M3 }, [small, large])).toEqual(["b", "b"])
      // Without sizes, both fit the name's 4 GB: least load decides.
      const small2 = info({ id: "a", models: [M3], gpuMemoryGB: 16 })
      const large2 = info({ id: "b", models: [M3], gpuMemoryGB: 32, active: 1 })
      expect((yield* pick({ model: M3 }, [small2, large2])).worker.workerId).toBe("a")
    }).pipe(Effect.provide(layer))
  )

  it.effect("prefers the less loaded worker by reported active requests", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a", active: 3 }), info({ id: "b", active: 1 }), info({ id: "c", active: 2 })]
      expect(yield* selectN(3, { model: M7 }, workers)).toEqual(["b", "b", "b"])
    }).pipe(Effect.provide(layer))
  )

  it.effect("load counts the controller's in-flight requests when they exceed the last report", () =>
    Effect.gen(function* () {
      // a reported 0 a while ago, but the controller has just sent it 3 requests.
      const workers = [info({ id: "a", active: 0 }), info({ id: "b", active: 1 })]
      expect((yield* pick({ model: M7 }, workers, new Map([["a", 3]]))).worker.workerId).toBe("b")
      // b's report is higher than what the controller knows of: the report counts.
      const workers2 = [info({ id: "a", active: 0 }), info({ id: "b", active: 3 })]
      expect((yield* pick({ model: M7 }, workers2, new Map([["b", 1], ["a", 2]]))).worker.workerId).toBe("a")
    }).pipe(Effect.provide(layer))
  )

  it.effect("round robin among tied workers: k selections pick each once", () =>
    Effect.gen(function* () {
      const workers = ["w3", "w1", "w2"].map((id) => info({ id }))
      const ids = yield* selectN(6, { model: M7 }, workers)
      expect(ids).toEqual(["w1", "w2", "w3", "w1", "w2", "w3"])
    }).pipe(Effect.provide(layer))
  )

  it.effect("ties prefer the higher priority (default 0)", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a" }), info({ id: "b", priority: 5 }), info({ id: "c", priority: -1 })]
      expect(yield* selectN(3, { model: M7 }, workers)).toEqual(["b", "b", "b"])
      // Priority never beats load.
      const loaded = [info({ id: "a" }), info({ id: "b", priority: 5, active: 1 })]
      expect((yield* pick({ model: M7 }, loaded)).worker.workerId).toBe("a")
    }).pipe(Effect.provide(layer))
  )

  it.effect("no workers at all: the model is unknown (404); none online: NoWorkers naming the model", () =>
    Effect.gen(function* () {
      const empty = yield* Effect.flip(pick({ model: M7 }, []))
      expect(empty).toEqual(new ModelNotFound({ model: M7 }))
      const offline = yield* Effect.flip(pick({ model: M7 }, [info({ id: "a", status: "offline" })]))
      expect(offline._tag).toBe("NoWorkers")
      expect(offline.message).toContain(M7)
    }).pipe(Effect.provide(layer))
  )

  it.effect("no skilled worker fails with NoSkilledWorker listing the models online workers serve", () =>
    Effect.gen(function* () {
      const workers = [
        info({ id: "a", models: [M7, M3] }),
        info({ id: "b", models: [M3] }),
        info({ id: "c", models: [M13], status: "offline" })
      ]
      const error = yield* Effect.flip(pick({ model: M13 }, workers))
      expect(error).toEqual(new NoSkilledWorker({ model: M13, available: [M7, M3] })) // sorted: "m/…" < "mlx-…"
      expect(error.message).toContain(M13)
    }).pipe(Effect.provide(layer))
  )

  it.effect("tags: only workers with every requested tag; none → NoSkilledWorker", () =>
    Effect.gen(function* () {
      const workers = [
        info({ id: "a", tags: ["fast"] }),
        info({ id: "b", tags: ["fast", "gpu-large"] }),
        info({ id: "c" })
      ]
      expect(yield* selectN(2, { model: M7, tags: ["gpu-large", "fast"] }, workers)).toEqual(["b", "b"])
      expect(new Set(yield* selectN(4, { model: M7, tags: ["fast"] }, workers))).toEqual(new Set(["a", "b"]))
      expect(yield* selectN(3, { model: M7, tags: [] }, workers)).toHaveLength(3)
      const error = yield* Effect.flip(pick({ model: M7, tags: ["nope"] }, workers))
      expect(error).toEqual(new NoSkilledWorker({ model: M7, available: [M7], tags: ["nope"] }))
      expect(error.message).toBe(`No online worker can serve model "${M7}" with tags nope`)
    }).pipe(Effect.provide(layer))
  )

  it.effect("exclude skips workers already tried; all tried → NoWorkers", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a" }), info({ id: "b", active: 2 }), info({ id: "c", active: 3 })]
      expect((yield* pick({ model: M7, exclude: ["a"] }, workers)).worker.workerId).toBe("b")
      expect((yield* pick({ model: M7, exclude: ["a", "b"] }, workers)).worker.workerId).toBe("c")
      const error = yield* Effect.flip(pick({ model: M7, exclude: ["a", "b", "c"] }, workers))
      expect(error).toEqual(new NoWorkers({ model: M7 }))
    }).pipe(Effect.provide(layer))
  )

  it.effect("saturated: every eligible worker at maxConcurrent; a worker with room wins over hardware", () =>
    Effect.gen(function* () {
      const full = [info({ id: "a", maxConcurrent: 2, active: 2 }), info({ id: "b", maxConcurrent: 1, active: 1 })]
      const s1 = yield* pick({ model: M7 }, full)
      expect(s1.saturated).toBe(true)
      expect(s1.worker.workerId).toBe("b") // least loaded of the busy ones
      // in-flight counts toward saturation too
      const s2 = yield* pick({ model: M7 }, [info({ id: "a", maxConcurrent: 2 })], new Map([["a", 2]]))
      expect(s2.saturated).toBe(true)
      // One worker with room: it is chosen, even though it is too small for the model.
      const mixed = [
        info({ id: "big", models: [M13], gpuMemoryGB: 64, maxConcurrent: 1, active: 1 }),
        info({ id: "small", models: [M13], gpuMemoryGB: 8, maxConcurrent: 4, active: 0 })
      ]
      const s3 = yield* pick({ model: M13 }, mixed)
      expect(s3).toMatchObject({ saturated: false, worker: { workerId: "small" } })
      // maxConcurrent 0: never has room.
      expect((yield* pick({ model: M7 }, [info({ id: "z", maxConcurrent: 0 })])).saturated).toBe(true)
    }).pipe(Effect.provide(layer))
  )

  it.effect("a model no worker has registered is ModelNotFound; a known one nobody online serves is NoWorkers or NoSkilledWorker", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a", models: [M7] }), info({ id: "b", models: [M13], status: "offline" })]
      expect(yield* Effect.flip(pick({ model: "typo/model" }, workers))).toEqual(new ModelNotFound({ model: "typo/model" }))
      expect(yield* Effect.flip(pick({ model: M13 }, workers))).toEqual(new NoSkilledWorker({ model: M13, available: [M7] }))
      const allOffline = [info({ id: "b", models: [M13], status: "offline" })]
      expect(yield* Effect.flip(pick({ model: M13 }, allOffline))).toEqual(new NoWorkers({ model: M13 }))
    }).pipe(Effect.provide(layer))
  )

  it.effect("a failed selection does not move the round robin", () =>
    Effect.gen(function* () {
      const workers = ["a", "b"].map((id) => info({ id }))
      expect(yield* selectN(1, { model: M7 }, workers)).toEqual(["a"])
      yield* Effect.flip(pick({ model: "unknown" }, workers))
      expect(yield* selectN(1, { model: M7 }, workers)).toEqual(["b"])
    }).pipe(Effect.provide(layer))
  )
})

describe("Balancer (round_robin)", () => {
  it.effect("ignores load, hardware and priority; still filters skills, tags and offline workers", () =>
    Effect.gen(function* () {
      const workers = [
        info({ id: "a", active: 3, gpuMemoryGB: 4 }),
        info({ id: "b", priority: 9 }),
        info({ id: "c", models: [M3] }),
        info({ id: "d", status: "offline" })
      ]
      expect(yield* selectN(4, { model: M7 }, workers)).toEqual(["a", "b", "a", "b"])
      expect((yield* Effect.flip(pick({ model: M3, tags: ["x"] }, workers)))._tag).toBe("NoSkilledWorker")
      expect((yield* Effect.flip(pick({ model: M13 }, workers)))._tag).toBe("ModelNotFound")
    }).pipe(Effect.provide(balancerLayer("round_robin")))
  )

  it.effect("skips workers without room unless all are full", () =>
    Effect.gen(function* () {
      const workers = [info({ id: "a", maxConcurrent: 1, active: 1 }), info({ id: "b" })]
      expect(yield* selectN(2, { model: M7 }, workers)).toEqual(["b", "b"])
    }).pipe(Effect.provide(balancerLayer("round_robin")))
  )
})

describe("Balancer (least_loaded)", () => {
  it.effect("least load first, ties round robin; hardware and priority ignored", () =>
    Effect.gen(function* () {
      const workers = [
        info({ id: "a", models: [M13], gpuMemoryGB: 4, active: 0 }),
        info({ id: "b", models: [M13], gpuMemoryGB: 64, active: 1, priority: 9 }),
        info({ id: "c", models: [M13], gpuMemoryGB: 4, active: 0 })
      ]
      expect(yield* selectN(4, { model: M13 }, workers)).toEqual(["a", "c", "a", "c"])
      expect((yield* pick({ model: M13 }, workers, new Map([["a", 2], ["c", 2]]))).worker.workerId).toBe("b")
    }).pipe(Effect.provide(balancerLayer("least_loaded")))
  )
})

describe("selectWorker properties (fast-check)", () => {
  const models = ["m/A-3B", "m/B-7B", "m/C-13B", "m/D"]
  const tagPool = ["fast", "big", "lab"]
  const arbWorker = (id: string) =>
    fc
      .record({
        status: fc.constantFrom("online" as const, "offline" as const, "degraded" as const),
        models: fc.subarray(models),
        tags: fc.subarray(tagPool),
        gpuMemoryGB: fc.integer({ min: 0, max: 128 }),
        maxConcurrent: fc.integer({ min: 0, max: 8 }),
        active: fc.integer({ min: 0, max: 10 }),
        priority: fc.integer({ min: -3, max: 3 })
      })
      .map((r) => info({ id, ...r }))
  const arbWorkers = fc
    .uniqueArray(fc.constantFrom("w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"), { maxLength: 8 })
    .chain((ids) => fc.tuple(...ids.map(arbWorker)))
  const arbStrategy = fc.constantFrom<BalancingStrategy>("smart", "round_robin", "least_loaded")

  it("never returns an offline, unskilled, untagged or excluded worker; errors only when nothing qualifies", () => {
    fc.assert(
      fc.property(
        arbStrategy,
        arbWorkers,
        fc.constantFrom(...models, "m/E-70B"),
        fc.subarray(tagPool, { maxLength: 2 }),
        fc.subarray(["w0", "w1", "w2", "w3"]),
        fc.dictionary(fc.constantFrom("w0", "w1", "w2", "w3"), fc.integer({ min: 0, max: 10 })),
        fc.option(fc.constantFrom("w0", "w3", "w7", "zz"), { nil: undefined }),
        (strategy, workers, model, tags, excluded, inFlightRecord, last) => {
          const load = loadFrom(new Map(Object.entries(inFlightRecord)))
          const result = selectWorker(strategy, { model, tags, exclude: excluded }, workers, load, last)
          const qualifies = (w: WorkerInfo) =>
            w.status === "online" &&
            w.skills.availableModels.includes(model) &&
            tags.every((t) => (w.tags ?? []).includes(t)) &&
            !excluded.includes(w.workerId)
          const eligible = workers.filter(qualifies)
          if (Either.isRight(result)) {
            const { worker, saturated } = result.right
            expect(qualifies(worker)).toBe(true)
            expect(saturated).toBe(eligible.every((w) => load(w) >= w.capabilities.maxConcurrent))
          } else {
            expect(eligible).toHaveLength(0)
          }
        }
      ),
      { numRuns: 500 }
    )
  })

  it("with equal load, k tied workers are each chosen n times over k×n selections, in any input order", () => {
    fc.assert(
      fc.property(
        arbStrategy,
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 3 }),
        fc.option(fc.constantFrom<string>("w0", "w5", "x"), { nil: undefined }),
        fc.infiniteStream(fc.integer()),
        (strategy, k, n, active, start, shuffles) => {
          const workers = Array.from({ length: k }, (_, i) => info({ id: `w${i}`, active }))
          const counts = new Map<string, number>()
          let last = start
          const seeds = shuffles[Symbol.iterator]()
          for (let i = 0; i < k * n; i++) {
            const seed = seeds.next().value as number
            const order = [...workers].sort((a, b) => ((a.workerId.charCodeAt(1) * seed) % 7) - ((b.workerId.charCodeAt(1) * seed) % 7))
            const result = selectWorker(strategy, { model: "m/Model-7B" }, order, loadFrom(noInFlight), last)
            if (Either.isLeft(result)) throw new Error("unexpected failure")
            const id = result.right.worker.workerId
            counts.set(id, (counts.get(id) ?? 0) + 1)
            last = id
          }
          expect([...counts.values()]).toEqual(Array.from({ length: k }, () => n))
        }
      )
    )
  })
})

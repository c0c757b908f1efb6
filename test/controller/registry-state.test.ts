import { describe, expect, it } from "@effect/vitest"
import { HashMap } from "effect"
import { WorkerId } from "../../src/domain/ids.js"
import type { WorkerInfo } from "../../src/domain/worker.js"
import * as State from "../../src/controller/registry-state.js"
import { heartbeat, metrics, registration } from "./support/fixtures.js"

const get = (state: State.RegistryState, id: string): WorkerInfo => {
  const info = State.getWorker(state, id)
  if (info === undefined) throw new Error(`no worker ${id}`)
  return info
}

/** `state` with worker `id` changed by `f`, as a status no transition sets yet (degraded) would be. */
const modify = (state: State.RegistryState, id: string, f: (w: WorkerInfo) => WorkerInfo): State.RegistryState => ({
  ...state,
  workers: HashMap.modify(state.workers, id, f)
})

const registered = (...ids: ReadonlyArray<string>): State.RegistryState =>
  ids.reduce((s, id) => State.applyRegistration(s, registration({ id }), 1_000).state, State.empty)

const deregistration = (id: string) => ({ workerId: WorkerId.make(id), timestamp: 0 })

describe("registry-state", () => {
  describe("applyRegistration", () => {
    it("adds a new worker online with registeredAt = lastHeartbeat = now", () => {
      const { state, transitions } = State.applyRegistration(State.empty, registration({ id: "w1" }), 1_000)
      const w = get(state, "w1")
      expect(w.status).toBe("online")
      expect(w.registeredAt).toBe(1_000)
      expect(w.lastHeartbeat).toBe(1_000)
      expect(w.statusReason).toBeUndefined()
      expect(w.metrics).toBeUndefined()
      expect(transitions).toEqual([{ workerId: "w1", from: "absent", to: "online", reason: "registered" }])
    })

    it("re-registration replaces the registration fields, keeps registeredAt and metrics, no transition", () => {
      const s1 = registered("w1")
      const s2 = State.applyHeartbeat(s1, heartbeat("w1", 3), 2_000).state
      const { state, transitions } = State.applyRegistration(
        s2,
        registration({ id: "w1", models: ["a/New-3B"], tags: ["fast"], priority: 2 }),
        5_000
      )
      const w = get(state, "w1")
      expect(transitions).toEqual([])
      expect(w.skills.availableModels).toEqual(["a/New-3B"])
      expect(w.tags).toEqual(["fast"])
      expect(w.priority).toBe(2)
      expect(w.registeredAt).toBe(1_000)
      expect(w.lastHeartbeat).toBe(5_000)
      expect(w.metrics).toEqual(metrics(3))
      expect(w.status).toBe("online")
    })

    it("re-registration of an offline worker brings it online and clears the reason", () => {
      const offline = State.markOffline(registered("w1"), "w1", "gone").state
      const { state, transitions } = State.applyRegistration(offline, registration({ id: "w1" }), 9_000)
      expect(get(state, "w1").status).toBe("online")
      expect(get(state, "w1").statusReason).toBeUndefined()
      expect(get(state, "w1").registeredAt).toBe(1_000)
      expect(transitions).toEqual([{ workerId: "w1", from: "offline", to: "online", reason: "registered" }])
    })

    it("re-registration keeps a degraded status and its reason", () => {
      const degraded = modify(registered("w1"), "w1", (w) => ({
        ...w,
        status: "degraded" as const,
        statusReason: "slow"
      }))
      const { state, transitions } = State.applyRegistration(degraded, registration({ id: "w1" }), 2_000)
      expect(get(state, "w1").status).toBe("degraded")
      expect(get(state, "w1").statusReason).toBe("slow")
      expect(transitions).toEqual([])
    })
  })

  describe("applyHeartbeat", () => {
    it("from an unknown worker: unknown, state unchanged", () => {
      const s = registered("w1")
      const r = State.applyHeartbeat(s, heartbeat("ghost"), 2_000)
      expect(r.result).toBe("unknown")
      expect(r.state).toBe(s)
      expect(r.transitions).toEqual([])
    })

    it("records metrics and lastHeartbeat = now (not the worker's timestamp)", () => {
      const r = State.applyHeartbeat(registered("w1"), heartbeat("w1", 2, 123), 2_000)
      expect(r.result).toBe("updated")
      expect(r.transitions).toEqual([])
      expect(get(r.state, "w1").metrics).toEqual(metrics(2))
      expect(get(r.state, "w1").lastHeartbeat).toBe(2_000)
    })

    it("brings an offline worker back online with a transition", () => {
      const offline = State.markOffline(registered("w1"), "w1", "no heartbeat for 15.2 s").state
      const r = State.applyHeartbeat(offline, heartbeat("w1", 1), 30_000)
      expect(r.result).toBe("updated")
      expect(get(r.state, "w1").status).toBe("online")
      expect(get(r.state, "w1").statusReason).toBeUndefined()
      expect(r.transitions).toEqual([{ workerId: "w1", from: "offline", to: "online", reason: "heartbeat received" }])
    })
  })

  describe("applyDeregistration", () => {
    it("marks the worker offline with reason deregistered and keeps it listed", () => {
      const r = State.applyDeregistration(registered("w1", "w2"), deregistration("w1"))
      expect(get(r.state, "w1").status).toBe("offline")
      expect(get(r.state, "w1").statusReason).toBe("deregistered")
      expect(get(r.state, "w1").lastHeartbeat).toBe(1_000)
      expect(get(r.state, "w2").status).toBe("online")
      expect(r.transitions).toEqual([{ workerId: "w1", from: "online", to: "offline", reason: "deregistered" }])
    })

    it("of an unknown or already offline worker changes nothing", () => {
      const s = registered("w1")
      expect(State.applyDeregistration(s, deregistration("nobody")).state).toBe(s)
      const off = State.applyDeregistration(s, deregistration("w1")).state
      const again = State.applyDeregistration(off, deregistration("w1"))
      expect(again.state).toBe(off)
      expect(again.transitions).toEqual([])
    })
  })

  describe("markOffline", () => {
    it("marks with the given reason; unknown ids change nothing", () => {
      const s = registered("w1")
      const r = State.markOffline(s, "w1", "worker lost")
      expect(get(r.state, "w1").statusReason).toBe("worker lost")
      expect(r.transitions).toEqual([{ workerId: "w1", from: "online", to: "offline", reason: "worker lost" }])
      expect(State.markOffline(s, "x", "r").state).toBe(s)
    })
  })

  describe("sweep", () => {
    it("marks online workers silent for more than the timeout offline, with the silence in the reason", () => {
      let s = registered("w1", "w2")
      s = State.applyHeartbeat(s, heartbeat("w2"), 10_000).state
      const r = State.sweep(s, 16_200, 15_000)
      expect(get(r.state, "w1").status).toBe("offline")
      expect(get(r.state, "w1").statusReason).toBe("no heartbeat for 15.2 s")
      expect(get(r.state, "w2").status).toBe("online")
      expect(r.transitions).toEqual([
        { workerId: "w1", from: "online", to: "offline", reason: "no heartbeat for 15.2 s" }
      ])
    })

    it("is strict: exactly the timeout is still online; nothing to do returns the same state", () => {
      const s = registered("w1")
      const r = State.sweep(s, 16_000, 15_000)
      expect(r.state).toBe(s)
      expect(r.transitions).toEqual([])
    })

    it("does not touch workers already offline", () => {
      const off = State.markOffline(registered("w1"), "w1", "deregistered").state
      const r = State.sweep(off, 100_000, 15_000)
      expect(r.state).toBe(off)
      expect(get(r.state, "w1").statusReason).toBe("deregistered")
    })

    it("marks degraded workers offline too", () => {
      const s = modify(registered("w1"), "w1", (w) => ({ ...w, status: "degraded" as const }))
      const r = State.sweep(s, 20_000, 15_000)
      expect(r.transitions).toEqual([
        { workerId: "w1", from: "degraded", to: "offline", reason: "no heartbeat for 19.0 s" }
      ])
    })
  })

  describe("prune", () => {
    it("removes offline workers whose last heartbeat is older than pruneAfterMs", () => {
      let s = registered("w1", "w2", "w3")
      s = State.markOffline(s, "w1", "deregistered").state
      s = State.applyHeartbeat(s, heartbeat("w2"), 50_000).state
      s = State.markOffline(s, "w2", "gone").state
      const r = State.prune(s, 61_001, 60_000)
      expect(State.getWorker(r.state, "w1")).toBeUndefined()
      expect(State.getWorker(r.state, "w2")).toBeDefined() // offline, but recent
      expect(State.getWorker(r.state, "w3")).toBeDefined() // silent but online: the sweep's job first
      expect(r.transitions).toEqual([
        { workerId: "w1", from: "offline", to: "absent", reason: "pruned, no heartbeat for 60.0 s" }
      ])
    })

    it("nothing to prune returns the same state", () => {
      const s = registered("w1")
      expect(State.prune(s, 10_000_000, 60_000).state).toBe(s)
    })
  })

  describe("indexes", () => {
    const ids = (workers: ReadonlyArray<WorkerInfo>) => workers.map((w) => w.workerId).sort()

    it("onlineServing follows registrations, skill changes, offline and back, and prunes", () => {
      let s = State.applyRegistration(State.empty, registration({ id: "w1", models: ["a", "b"] }), 0).state
      s = State.applyRegistration(s, registration({ id: "w2", models: ["b"] }), 0).state
      expect(ids(State.onlineServing(s, "a"))).toEqual(["w1"])
      expect(ids(State.onlineServing(s, "b"))).toEqual(["w1", "w2"])
      expect(State.onlineServing(s, "c")).toEqual([])
      // w1 now serves c instead of a
      s = State.applyRegistration(s, registration({ id: "w1", models: ["b", "c"] }), 1).state
      expect(State.onlineServing(s, "a")).toEqual([])
      expect(ids(State.onlineServing(s, "c"))).toEqual(["w1"])
      expect(State.isKnownModel(s, "a")).toBe(false)
      // offline: not serving, still known
      s = State.markOffline(s, "w2", "gone").state
      expect(ids(State.onlineServing(s, "b"))).toEqual(["w1"])
      expect(State.isKnownModel(s, "b")).toBe(true)
      s = State.applyHeartbeat(s, heartbeat("w2"), 2).state
      expect(ids(State.onlineServing(s, "b"))).toEqual(["w1", "w2"])
      // pruned: neither serving nor known
      s = State.markOffline(s, "w1", "gone").state
      s = State.prune(s, 100_000, 10).state
      expect(State.onlineServing(s, "c")).toEqual([])
      expect(State.isKnownModel(s, "c")).toBe(false)
      expect(State.isKnownModel(s, "b")).toBe(true)
    })

    it("a heartbeat leaves the indexes as they are (same objects)", () => {
      const s = State.applyRegistration(State.empty, registration({ id: "w1", models: ["a"] }), 0).state
      const after = State.applyHeartbeat(s, heartbeat("w1", 3), 5).state
      expect(after.onlineByModel).toBe(s.onlineByModel)
      expect(after.knownModels).toBe(s.knownModels)
      expect(State.onlineServing(after, "a")[0]?.metrics?.requests.active).toBe(3)
    })

    it("servedModels lists each model once, with the earliest registration among its online workers", () => {
      let s = State.applyRegistration(State.empty, registration({ id: "w1", models: ["b", "a"] }), 5_000).state
      s = State.applyRegistration(s, registration({ id: "w2", models: ["a"] }), 2_000).state
      expect(State.servedModels(s)).toEqual([
        { model: "a", since: 2_000 },
        { model: "b", since: 5_000 }
      ])
    })

    it("counts by status", () => {
      let s = registered("w1", "w2", "w3")
      s = State.markOffline(s, "w2", "gone").state
      expect(State.counts(s)).toEqual({ total: 3, online: 2, offline: 1 })
    })
  })

  it("toArray lists workers ordered by id", () => {
    const s = registered("w3", "w1", "w2")
    expect(State.toArray(s).map((w) => w.workerId)).toEqual(["w1", "w2", "w3"])
  })

  it("silenceReason formats tenths of seconds", () => {
    expect(State.silenceReason(15_249)).toBe("no heartbeat for 15.2 s")
    expect(State.silenceReason(3_600_000)).toBe("no heartbeat for 3600.0 s")
  })
})

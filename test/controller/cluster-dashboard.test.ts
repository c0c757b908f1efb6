import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { ActivityWindow } from "../../src/controller/cluster-activity.js"
import { dashboardAffinity, dashboardModels, dashboardSnapshot, dashboardWorker } from "../../src/controller/cluster-dashboard.js"
import { DashboardSnapshot } from "../../src/domain/dashboard.js"
import type { WorkerInfo } from "../../src/domain/worker.js"
import { info, metrics } from "./support/fixtures.js"

const online: WorkerInfo = {
  ...info({ id: "studio", models: ["m/a", "m/shared"], tags: ["fast"], maxConcurrent: 8 }),
  metrics: { ...metrics(3), tokensPerSecond: 120 },
  lastHeartbeat: 9_600
}
const offline: WorkerInfo = {
  ...info({ id: "laptop", status: "offline", models: ["m/shared", "m/b"], maxConcurrent: 2 }),
  statusReason: "no heartbeat for 16.0 s",
  metrics: { ...metrics(2), tokensPerSecond: 55 },
  lastHeartbeat: -6_000
}

describe("dashboardWorker", () => {
  it("shows status, reason, hardware, models, slots, tokens/s, heartbeat age and tags", () => {
    expect(dashboardWorker(online, 10_000)).toEqual({
      workerId: "studio",
      hostname: "studio.local",
      status: "online",
      chip: "Apple M2 Max",
      cpuCores: 12,
      gpuCores: 38,
      gpuMemoryGB: 48,
      totalMemoryGB: 64,
      engine: "synthetic",
      models: ["m/a", "m/shared"],
      tags: ["fast"],
      active: 3,
      maxConcurrent: 8,
      tokensPerSecond: 120,
      requestsServed: 3,
      lastHeartbeatAgeMs: 400
    })
  })

  it("shows an offline worker with its reason and without the load it last reported", () => {
    expect(dashboardWorker(offline, 10_000)).toMatchObject({
      status: "offline",
      statusReason: "no heartbeat for 16.0 s",
      active: 0,
      tokensPerSecond: 0,
      lastHeartbeatAgeMs: 16_000
    })
  })
})

describe("dashboardModels", () => {
  it("lists every model with its online and offline workers and its rates", () => {
    const window = new ActivityWindow()
    for (let i = 0; i < 10; i++) window.record({ requestId: `r${i}`, route: "chat", model: "m/shared", modelKnown: true, outcome: "succeeded", status: 200, tokens: 5, retries: 0 }, 9_500)
    expect(dashboardModels([online, offline], window.snapshot(10_000))).toEqual([
      { model: "m/a", workers: ["studio"], offlineWorkers: [], requestsPerSecond: 0, tokensPerSecond: 0 },
      { model: "m/b", workers: [], offlineWorkers: ["laptop"], requestsPerSecond: 0, tokensPerSecond: 0 },
      { model: "m/shared", workers: ["studio"], offlineWorkers: ["laptop"], requestsPerSecond: 1, tokensPerSecond: 5 }
    ])
  })
})

describe("dashboardSnapshot", () => {
  it("puts online workers first and encodes with the DashboardSnapshot schema", () => {
    const snapshot = dashboardSnapshot({
      now: 10_000,
      startedAt: 4_000,
      mode: "controller",
      state: "ready",
      workers: [offline, online],
      requests: { active: 1, total: 10, succeeded: 7, failed: 1, cancelled: 1 },
      queued: 2,
      activity: new ActivityWindow().snapshot(10_000),
      affinity: { hit: 9, displaced: 3, miss: 4 }
    })
    expect(snapshot.workers.map((w) => w.workerId)).toEqual(["studio", "laptop"])
    expect(snapshot.controller).toMatchObject({
      state: "ready",
      uptimeMs: 6_000,
      inFlight: 1,
      queued: 2,
      requests: { active: 1, total: 10, succeeded: 7, failed: 1, cancelled: 1 },
      successRate: 7 / 8,
      ttftP50Ms: null,
      affinity: { enabled: true, hits: 9, displaced: 3, misses: 4, hitRate: 0.75 }
    })
    const wire = Schema.encodeSync(DashboardSnapshot)(snapshot)
    expect(Schema.decodeUnknownSync(DashboardSnapshot)(JSON.parse(JSON.stringify(wire)))).toEqual(snapshot)
  })
})

describe("dashboardAffinity", () => {
  it("has no hit rate before a prompt some worker had cached, and says when affinity is off", () => {
    expect(dashboardAffinity({ hit: 0, displaced: 0, miss: 5 })).toEqual({ enabled: true, hits: 0, displaced: 0, misses: 5, hitRate: null })
    expect(dashboardAffinity(undefined)).toEqual({ enabled: false, hits: 0, displaced: 0, misses: 0, hitRate: null })
    expect(dashboardAffinity({ hit: 1, displaced: 0, miss: 0 }).hitRate).toBe(1)
  })
})

import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import {
  eventJson,
  formatAge,
  formatDuration,
  formatGenerateSummary,
  formatModels,
  formatPercent,
  formatSlots,
  formatStatus,
  formatWorkers,
  renderTable,
  statusJson,
  workersJson
} from "../../src/cli/format.js"
import { ClusterStatus } from "../../src/domain/cluster.js"
import { WorkerInfo } from "../../src/domain/worker.js"
import { info } from "../controller/support/fixtures.js"

describe("renderTable", () => {
  it("pads every column to its widest cell and trims line ends", () => {
    expect(renderTable(["A", "LONG HEADER", "C"], [["xxxx", "y", ""], ["z", "w", "v"]])).toBe(
      ["A     LONG HEADER  C", "xxxx  y", "z     w            v"].join("\n")
    )
  })

  it("prints only the header without rows", () => {
    expect(renderTable(["ID", "STATUS"], [])).toBe("ID  STATUS")
  })
})

describe("formatDuration / formatAge / formatPercent", () => {
  it.each([
    [0, "0 ms"],
    [950, "950 ms"],
    [1_500, "1.5 s"],
    [12_400, "12 s"],
    [185_000, "3m 05s"],
    [2 * 3_600_000 + 4 * 60_000, "2h 04m"],
    [3 * 86_400_000 + 3_600_000, "3d 01h"],
    [-5, "-"],
    [Number.NaN, "-"]
  ])("%d ms is %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text)
  })

  it("says how long ago", () => {
    expect(formatAge(10_000, 10_400)).toBe("just now")
    expect(formatAge(10_000, 14_200)).toBe("4.2 s ago")
  })

  it("shows a fraction as a percentage with one decimal", () => {
    expect(formatPercent(1)).toBe("100.0 %")
    expect(formatPercent(0.98333)).toBe("98.3 %")
    expect(formatPercent(0)).toBe("0.0 %")
  })
})

const status: ClusterStatus = {
  controller: { version: "0.1.0", uptime: 3_723_000, mode: "both", state: "ready" },
  workers: { total: 3, online: 2, offline: 1 },
  requests: { active: 1, total: 120, succeeded: 115, failed: 2, cancelled: 2, successRate: 115 / 117 }
}

describe("formatStatus", () => {
  it("shows the controller, worker counts and requests whose parts add up to the total, cancelled included", () => {
    expect(formatStatus(status)).toBe(
      [
        "controller  ready, version 0.1.0, mode both, uptime 1h 02m",
        "workers     3 total, 2 online, 1 offline",
        "requests    120 total = 1 active + 115 succeeded + 2 failed + 2 cancelled, success rate 98.3 %"
      ].join("\n")
    )
    const parts = /= (\d+) active \+ (\d+) succeeded \+ (\d+) failed \+ (\d+) cancelled/.exec(formatStatus(status))
    expect((parts?.slice(1) ?? []).map(Number).reduce((a, b) => a + b, 0)).toBe(status.requests.total)
  })
})

describe("--json output", () => {
  it("status and workers print the wire JSON, which decodes back to the same values", () => {
    expect(Schema.decodeUnknownSync(ClusterStatus)(JSON.parse(statusJson(status)))).toEqual(status)
    const workers = [info({ id: "w1", tags: ["studio"], active: 1 })]
    expect(Schema.decodeUnknownSync(Schema.Array(WorkerInfo))(JSON.parse(workersJson(workers)))).toEqual(workers)
  })

  it("a status from a controller that does not send `cancelled` reads as 0 cancelled", () => {
    const { cancelled: _c, ...older } = status.requests
    const decoded = Schema.decodeUnknownSync(ClusterStatus)({ ...status, requests: older })
    expect(decoded.requests.cancelled).toBe(0)
  })

  it("generate prints one compact JSON object per event", () => {
    const token = { type: "token" as const, index: 0, token: "hi\n" }
    expect(eventJson(token)).toBe('{"type":"token","index":0,"token":"hi\\n"}')
    expect(eventJson(token)).not.toContain("\n")
  })
})

describe("formatModels", () => {
  it("lists at most two models, then how many more", () => {
    expect(formatModels([])).toBe("-")
    expect(formatModels(["a"])).toBe("a")
    expect(formatModels(["a", "b"])).toBe("a, b")
    expect(formatModels(["a", "b", "c", "d"])).toBe("a, b +2 more")
  })
})

describe("formatWorkers", () => {
  it("says so when there are no workers", () => {
    expect(formatWorkers([], 0)).toBe("no workers registered")
  })

  it("renders one aligned row per worker, with tags, slots and requests served", () => {
    const online = {
      ...info({ id: "mac-studio", models: ["m/Llama-3B", "m/Qwen-7B", "m/Big-70B"], active: 2, tags: ["studio", "fast"] }),
      lastHeartbeat: 95_000
    }
    const base = info({ id: "mbp", status: "offline", maxConcurrent: 2 })
    const { chip: _chip, ...noChip } = base.hardware
    const offline = {
      ...base,
      statusReason: "no heartbeat for 15.2 s",
      hardware: { ...noChip, gpuMemoryGB: 10.67 },
      lastHeartbeat: 0
    }
    const text = formatWorkers([online, offline], 100_000)
    expect(text.split("\n")).toEqual([
      "ID          STATUS                             HOST              CHIP          GPU GB  MODELS                         TAGS         SLOTS  SERVED  LAST HEARTBEAT",
      "mac-studio  online                             mac-studio.local  Apple M2 Max  48      m/Llama-3B, m/Qwen-7B +1 more  studio,fast  2/4    2       5.0 s ago",
      "mbp         offline (no heartbeat for 15.2 s)  mbp.local         -             10.7    m/Model-7B                     -            -/2    -       1m 40s ago"
    ])
  })

  it("shows no load for an offline worker, whatever it last reported", () => {
    const dead = { ...info({ id: "w", status: "offline", active: 3, maxConcurrent: 4 }), statusReason: "no heartbeat for 20 s" }
    expect(formatSlots(dead)).toBe("-/4")
    expect(formatSlots(info({ id: "w", active: 3, maxConcurrent: 4 }))).toBe("3/4")
    expect(formatSlots(info({ id: "w", maxConcurrent: 4 }))).toBe("0/4")
  })
})

describe("formatGenerateSummary", () => {
  it("gives tokens, time, rate, finish reason, prompt size and worker", () => {
    const done = {
      type: "done" as const,
      finishReason: "stop" as const,
      usage: { promptTokens: 12, completionTokens: 40 },
      latencyMs: 900,
      workerId: "w1"
    }
    expect(formatGenerateSummary(done, 2_000)).toBe("[40 tokens in 2.0 s, 20.0 tokens/s, finish stop, prompt 12 tokens, worker w1]")
    expect(formatGenerateSummary(done, 0)).toBe("[40 tokens in 0 ms, finish stop, prompt 12 tokens, worker w1]")
  })
})

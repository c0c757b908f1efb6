import { describe, expect, it } from "@effect/vitest"
import { clusterGauges, codeLabel, modelLabel, routeLabel } from "../../src/controller/metrics.js"
import { ErrorTable } from "../../src/domain/errors.js"
import { renderFamilies } from "../../src/controller/prometheus-text.js"
import type { WorkerInfo } from "../../src/domain/worker.js"
import { info, metrics } from "./support/fixtures.js"

describe("bounded labels", () => {
  it("routes: front-door names and their paths, anything else is `other`", () => {
    expect(["chat", "completions", "ws", "rpc", "internal"].map(routeLabel)).toEqual(["chat", "completions", "ws", "rpc", "internal"])
    expect(routeLabel("/v1/chat/completions")).toBe("chat")
    expect(routeLabel("/v1/models/some/model")).toBe("models")
    expect(routeLabel("/api/cluster/events")).toBe("api")
    expect(routeLabel("/wp-admin/" + "x".repeat(500))).toBe("other")
  })

  it("error codes: the documented ones, anything else is `other`", () => {
    expect(codeLabel("worker_lost")).toBe("worker_lost")
    expect(codeLabel("invalid_api_key")).toBe("invalid_api_key")
    expect(codeLabel("made_up_by_a_worker")).toBe("other")
    for (const { code } of Object.values(ErrorTable)) expect(codeLabel(code)).toBe(code)
    for (const code of ["overloaded", "slow_consumer", "unsupported_parameter", "unknown_url", "controller_gone", "continuation_unsupported"]) {
      expect(codeLabel(code)).toBe(code)
    }
    expect(codeLabel(undefined)).toBe("unknown")
  })

  it("models: only a model some worker registered keeps its name", () => {
    expect(modelLabel("m/Llama", true)).toBe("m/Llama")
    expect(modelLabel("m/typo", false)).toBe("unknown")
    expect(modelLabel("", true)).toBe("unknown")
  })
})

describe("clusterGauges", () => {
  const workers: ReadonlyArray<WorkerInfo> = [
    { ...info({ id: "w2", maxConcurrent: 8 }), metrics: { ...metrics(3), tokensPerSecond: 41.5 } },
    // Offline with a stale report of 2 active requests: it shows none.
    { ...info({ id: "w1", status: "offline", maxConcurrent: 4 }), metrics: { ...metrics(2), tokensPerSecond: 9 }, statusReason: "no heartbeat for 16 s" }
  ]
  const text = renderFamilies(clusterGauges({ workers, inFlight: 5, queued: 2, version: "0.1.0" }))

  it("count workers by status, in-flight requests and the queue", () => {
    expect(text).toContain('mlx_cluster_workers{status="online"} 1\nmlx_cluster_workers{status="offline"} 1\nmlx_cluster_workers{status="degraded"} 0\n')
    expect(text).toContain("mlx_cluster_requests_in_flight 5\n")
    expect(text).toContain("mlx_cluster_queue_depth 2\n")
    expect(text).toContain('mlx_cluster_build_info{version="0.1.0"} 1\n')
  })

  it("give one series per registered worker, with no stale load for an offline one", () => {
    expect(text).toContain('mlx_cluster_worker_active_requests{worker="w1"} 0\nmlx_cluster_worker_active_requests{worker="w2"} 3\n')
    expect(text).toContain('mlx_cluster_worker_max_concurrent{worker="w1"} 4\nmlx_cluster_worker_max_concurrent{worker="w2"} 8\n')
    expect(text).toContain('mlx_cluster_worker_tokens_per_second{worker="w1"} 0\nmlx_cluster_worker_tokens_per_second{worker="w2"} 41.5\n')
    expect(text).toContain('mlx_cluster_worker_online{worker="w1"} 0\nmlx_cluster_worker_online{worker="w2"} 1\n')
    // A pruned worker is simply not in the next scrape.
    expect(renderFamilies(clusterGauges({ workers: [], inFlight: 0, queued: 0, version: "0.1.0" }))).not.toContain("worker=")
  })
})

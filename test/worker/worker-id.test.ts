import { describe, expect, it } from "@effect/vitest"
import { resolveWorkerId, workerIdFromHostname } from "../../src/worker/worker-id.js"

describe("worker id", () => {
  it("derives a stable, subject-safe id from the host name", () => {
    expect(workerIdFromHostname("Mac-Studio-1.local")).toBe("mac-studio-1")
    expect(workerIdFromHostname("mac-studio-1.lan")).toBe("mac-studio-1")
    expect(workerIdFromHostname("Jane's MacBook Pro")).toBe("jane-s-macbook-pro")
    expect(workerIdFromHostname("a*b>c d\te")).toBe("a-b-c-d-e")
    expect(workerIdFromHostname("--x__y--")).toBe("x__y")
    expect(workerIdFromHostname("")).toBe("worker")
    expect(workerIdFromHostname(".local")).toBe("worker")
    expect(workerIdFromHostname("***")).toBe("worker")
  })

  it("uses worker.id when the config sets one", () => {
    expect(resolveWorkerId("w-7", "ignored")).toBe("w-7")
    expect(resolveWorkerId(null, "Mac-Mini.local")).toBe("mac-mini")
    expect(resolveWorkerId(null)).toMatch(/^[a-z0-9_-]+$/)
  })
})

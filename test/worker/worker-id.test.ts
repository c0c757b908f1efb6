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

describe("worker id bounds", () => {
  it("derives a valid id from any host name: long, non-ASCII, or full of symbols", () => {
    const long = workerIdFromHostname(`${"a".repeat(300)}.local`)
    expect(long).toHaveLength(128)
    expect(workerIdFromHostname(`${"a".repeat(127)}-b`)).toBe("a".repeat(127))
    expect(workerIdFromHostname("Marks-MacBook-Pro.local")).toBe("marks-macbook-pro")
    expect(workerIdFromHostname("Mäx’s Mac")).toBe("m-x-s-mac")
    expect(workerIdFromHostname("host\nname")).toBe("host-name")
  })

  it("refuses a configured id that is too long or holds other characters", () => {
    expect(() => resolveWorkerId("a".repeat(129))).toThrow(/longer than 128/)
    expect(() => resolveWorkerId("studio@lab")).toThrow(/letters, digits/)
    expect(() => resolveWorkerId("")).toThrow(/empty/)
    expect(resolveWorkerId("Studio_2-b")).toBe("Studio_2-b")
  })
})

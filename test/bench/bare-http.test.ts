import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { inGroups } from "../../bench/bare-http.js"
import { YIELD_EVERY } from "../../src/worker/engines/synthetic-engine.js"

/** How the bare relay's workers hand out an answer's tokens (bench/bare-relay.ts). */
describe("bare worker pacing", () => {
  beforeEach(() => void vi.useFakeTimers())
  afterEach(() => void vi.useRealTimers())

  it("paced (intervalMs): one token at once, then one per interval, the last flagged", () => {
    const sent: Array<[ReadonlyArray<string>, number, boolean]> = []
    inGroups(["a", "b", "c"], (group, index, last) => void sent.push([group, index, last]), () => false, 1_000)
    expect(sent).toEqual([[["a"], 0, false]])
    vi.advanceTimersByTime(999)
    expect(sent).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(sent).toEqual([
      [["a"], 0, false],
      [["b"], 1, false]
    ])
    vi.advanceTimersByTime(1_000)
    expect(sent[2]).toEqual([["c"], 2, true])
    vi.advanceTimersByTime(10_000)
    expect(sent).toHaveLength(3)
  })

  it("paced (intervalMs): an empty answer is one empty last group", () => {
    const sent: Array<[ReadonlyArray<string>, number, boolean]> = []
    inGroups([], (group, index, last) => void sent.push([group, index, last]), () => false, 1_000)
    expect(sent).toEqual([[[], 0, true]])
  })

  it("inGroups: the synthetic engine's groups, one per turn of the event loop", () => {
    const tokens = Array.from({ length: YIELD_EVERY + 3 }, (_, i) => `t${i}`)
    const sent: Array<[number, number, boolean]> = []
    inGroups(tokens, (group, index, last) => void sent.push([group.length, index, last]))
    expect(sent).toEqual([[YIELD_EVERY, 0, false]])
    vi.runAllTimers()
    expect(sent).toEqual([
      [YIELD_EVERY, 0, false],
      [3, YIELD_EVERY, true]
    ])
  })
})

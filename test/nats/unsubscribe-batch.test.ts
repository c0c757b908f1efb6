import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { makeUnsubscribeBatch } from "../../src/nats/unsubscribe-batch.js"

const fakeSub = () => {
  const sub = { unsubscribed: 0, unsubscribe: () => void sub.unsubscribed++ }
  return sub
}

describe("unsubscribe batch (one UNSUB write per SUB, not per closed listener)", () => {
  beforeEach(() => void vi.useFakeTimers())
  afterEach(() => void vi.useRealTimers())

  it("holds closed subscriptions until flushed, then unsubscribes each once", () => {
    const batch = makeUnsubscribeBatch(50)
    const subs = [fakeSub(), fakeSub(), fakeSub()]
    for (const sub of subs) batch.add(sub)
    expect(subs.map((s) => s.unsubscribed)).toEqual([0, 0, 0])
    batch.flush()
    expect(subs.map((s) => s.unsubscribed)).toEqual([1, 1, 1])
    batch.flush()
    vi.advanceTimersByTime(1_000)
    expect(subs.map((s) => s.unsubscribed)).toEqual([1, 1, 1])
  })

  it("unsubscribes on its own after the delay when no SUB comes", () => {
    const batch = makeUnsubscribeBatch(50)
    const sub = fakeSub()
    batch.add(sub)
    vi.advanceTimersByTime(49)
    expect(sub.unsubscribed).toBe(0)
    vi.advanceTimersByTime(1)
    expect(sub.unsubscribed).toBe(1)
    // A later one starts a new delay.
    const later = fakeSub()
    batch.add(later)
    vi.advanceTimersByTime(50)
    expect(later.unsubscribed).toBe(1)
  })

  it("a subscription whose connection closed does not stop the others", () => {
    const batch = makeUnsubscribeBatch(50)
    const broken = {
      unsubscribe: () => {
        throw new Error("connection closed")
      }
    }
    const sub = fakeSub()
    batch.add(broken)
    batch.add(sub)
    expect(() => batch.flush()).not.toThrow()
    expect(sub.unsubscribed).toBe(1)
  })
})

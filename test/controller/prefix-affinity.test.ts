import { describe, expect, it } from "@effect/vitest"
import { chainOfWords, type PromptChain } from "../../src/domain/prompt-chain.js"
import {
  classifyDispatch,
  indexEntries,
  makePrefixIndex,
  matchTokens,
  preferByAffinity,
  recentDispatches,
  record,
  retainWorkers
} from "../../src/controller/prefix-affinity.js"

const MODEL = "m/Model-7B"
/** A chain of `blocks` blocks of 4 words: words `${tag}0…`, so equal tags share a prefix. */
const chain = (tag: string, blocks: number, from = 0): PromptChain =>
  chainOfWords(MODEL, Array.from({ length: (from + blocks) * 4 }, (_, i) => `${i < from * 4 ? "base" : tag}${i}`), 4)
const limits = { maxBlocksPerWorker: 1000, maxAgeMs: 60_000 }

describe("the prefix index", () => {
  it("matches, in tokens, the longest recorded prefix of the chain for that worker only", () => {
    const index = makePrefixIndex(limits)
    const turn1 = chain("a", 5)
    record(index, "w1", turn1, 0)
    expect(matchTokens(index, "w1", turn1, 1)).toBe(20)
    expect(matchTokens(index, "w2", turn1, 1)).toBe(0)
    // The next turn extends the prompt: its first five blocks are known.
    const turn2 = chainOfWords(MODEL, [...Array.from({ length: 20 }, (_, i) => `a${i}`), ...Array.from({ length: 12 }, (_, i) => `x${i}`)], 4)
    expect(matchTokens(index, "w1", turn2, 1)).toBe(20)
    expect(matchTokens(index, "w1", chain("b", 5), 1)).toBe(0)
    // A prefix shared with another recorded prompt counts.
    expect(matchTokens(index, "w1", chain("c", 3, 2), 1)).toBe(0)
    record(index, "w1", chain("d", 3, 2), 2)
    expect(matchTokens(index, "w1", chain("c", 3, 2), 3)).toBe(8)
  })

  it("forgets a prompt not recorded again within max_age_ms; recording it again renews it", () => {
    const index = makePrefixIndex({ maxBlocksPerWorker: 100, maxAgeMs: 1_000 })
    const old = chain("a", 3)
    record(index, "w1", old, 0)
    expect(matchTokens(index, "w1", old, 1_000)).toBe(12)
    expect(matchTokens(index, "w1", old, 1_001)).toBe(0)
    // Expired entries are dropped by the next record.
    record(index, "w1", chain("b", 2), 1_500)
    expect(indexEntries(index)).toBe(2)
    record(index, "w1", old, 1_600)
    expect(matchTokens(index, "w1", old, 2_000)).toBe(12)
  })

  it("evicts least recently used blocks first: tails of old prompts before shared prefixes", () => {
    const index = makePrefixIndex({ maxBlocksPerWorker: 12, maxAgeMs: 60_000 })
    const a = chain("a", 6, 4) // 4 shared blocks + 6 of its own
    const b = chain("b", 4, 4) // the same 4 + 4 of its own
    record(index, "w1", a, 0)
    record(index, "w1", b, 1)
    expect(indexEntries(index)).toBe(12) // 14 distinct blocks, bound 12
    expect(matchTokens(index, "w1", b, 2)).toBe(32) // the newest is whole
    expect(matchTokens(index, "w1", a, 2)).toBe(32) // a lost its last 2 blocks, not its prefix
  })

  it("a chain longer than the bound keeps its first blocks", () => {
    const index = makePrefixIndex({ maxBlocksPerWorker: 3, maxAgeMs: 60_000 })
    const long = chain("a", 10)
    record(index, "w1", long, 0)
    expect(indexEntries(index)).toBe(3)
    expect(matchTokens(index, "w1", long, 0)).toBe(12)
  })

  it("counts each worker's recent dispatches, decaying by e every max_age_ms", () => {
    const index = makePrefixIndex({ maxBlocksPerWorker: 100, maxAgeMs: 1_000 })
    record(index, "w1", chain("a", 2), 0)
    record(index, "w1", chain("b", 2), 0)
    record(index, "w1", chain("x", 0), 0) // a prompt too short for a block still counts as a dispatch
    record(index, "w2", chain("a", 2), 0)
    expect(recentDispatches(index, "w1", 0)).toBe(3)
    expect(recentDispatches(index, "w1", 1_000)).toBeCloseTo(3 / Math.E)
    record(index, "w1", chain("c", 2), 1_000)
    expect(recentDispatches(index, "w1", 1_000)).toBeCloseTo(3 / Math.E + 1)
    expect(recentDispatches(index, "w3", 0)).toBe(0)
    retainWorkers(index, new Set(["w2"]))
    expect(recentDispatches(index, "w1", 1_000)).toBe(0)
    expect(recentDispatches(index, "w2", 0)).toBe(1)
  })

  it("retainWorkers forgets workers that are gone", () => {
    const index = makePrefixIndex(limits)
    record(index, "w1", chain("a", 2), 0)
    record(index, "w2", chain("a", 2), 0)
    retainWorkers(index, new Set(["w2"]))
    expect(matchTokens(index, "w1", chain("a", 2), 0)).toBe(0)
    expect(matchTokens(index, "w2", chain("a", 2), 0)).toBe(8)
    expect(indexEntries(index)).toBe(2)
  })

  it("stays within its bound under 100k distinct prompts (entries, not heap), and still knows the recent ones", () => {
    const maxBlocksPerWorker = 2_000
    const index = makePrefixIndex({ maxBlocksPerWorker, maxAgeMs: 3_600_000 })
    const workers = ["w1", "w2", "w3", "w4"]
    let largest = 0
    let recent: ReadonlyArray<PromptChain> = []
    for (let i = 0; i < 100_000; i++) {
      // Each prompt: a shared 2-block system prompt, then 3 blocks of its own.
      const words = [...Array.from({ length: 8 }, (_, k) => `system${k}`), ...Array.from({ length: 12 }, (_, k) => `p${i}-${k}`)]
      const c = chainOfWords(MODEL, words, 4)
      record(index, workers[i % 4] as string, c, i)
      if (i % 1_000 === 0) largest = Math.max(largest, indexEntries(index))
      if (i >= 99_996) recent = [...recent, c]
    }
    largest = Math.max(largest, indexEntries(index))
    expect(largest).toBeLessThanOrEqual(workers.length * maxBlocksPerWorker)
    expect(indexEntries(index)).toBe(workers.length * maxBlocksPerWorker)
    for (const blocks of index.workers.values()) expect(blocks.size).toBe(maxBlocksPerWorker)
    recent.forEach((c, k) => expect(matchTokens(index, workers[k] as string, c, 100_000)).toBe(20))
  })
})

describe("preferByAffinity", () => {
  interface W {
    readonly id: string
    readonly load: number
    readonly match: number
  }
  const w = (id: string, load: number, match: number): W => ({ id, load, match })
  const settings = { minPrefixTokens: 64, maxImbalance: 2 }
  const choose = (candidates: ReadonlyArray<W>, s = settings) => {
    const choice = preferByAffinity(
      candidates,
      (c) => c.load,
      (c) => c.match,
      s
    )
    return { ids: choice.workers.map((c) => c.id), outcome: choice.outcome, matchTokens: choice.matchTokens }
  }

  it("keeps the workers with the longest match, when it reaches min_prefix_tokens", () => {
    expect(choose([w("a", 1, 0), w("b", 2, 640), w("c", 0, 128)])).toEqual({ ids: ["b"], outcome: "affinity", matchTokens: 640 })
    expect(choose([w("a", 1, 128), w("b", 2, 128), w("c", 0, 64)]).ids).toEqual(["a", "b"])
  })

  it("below min_prefix_tokens (or no match at all) every candidate stays: least load decides", () => {
    expect(choose([w("a", 1, 0), w("b", 0, 63)])).toEqual({ ids: ["a", "b"], outcome: "no_prefix", matchTokens: 0 })
    // min 0 still needs a match: a worker that holds nothing has no affinity.
    expect(choose([w("a", 0, 0), w("b", 1, 0)], { minPrefixTokens: 0, maxImbalance: 2 }).outcome).toBe("no_prefix")
  })

  it("a worker more than max_imbalance requests above the least loaded one loses its affinity", () => {
    // b at exactly min + 2 keeps it; at min + 3 it does not.
    expect(choose([w("a", 1, 0), w("b", 3, 640)]).ids).toEqual(["b"])
    expect(choose([w("a", 1, 0), w("b", 4, 640)])).toEqual({ ids: ["a", "b"], outcome: "imbalanced", matchTokens: 0 })
    // ... and the best match within the margin (here the system prompt on c) wins instead.
    expect(choose([w("a", 1, 0), w("b", 4, 640), w("c", 2, 128)])).toEqual({ ids: ["c"], outcome: "affinity", matchTokens: 128 })
    // max_imbalance 0: affinity only among the least loaded.
    expect(choose([w("a", 1, 0), w("b", 2, 640)], { minPrefixTokens: 64, maxImbalance: 0 }).outcome).toBe("imbalanced")
  })
})

describe("classifyDispatch", () => {
  it("hit: the chosen worker held the most, at least min_prefix_tokens; displaced: another held more; else miss", () => {
    expect(classifyDispatch(640, 640, 64)).toBe("hit")
    expect(classifyDispatch(64, 64, 64)).toBe("hit")
    expect(classifyDispatch(128, 640, 64)).toBe("displaced")
    expect(classifyDispatch(0, 64, 64)).toBe("displaced")
    expect(classifyDispatch(0, 48, 64)).toBe("miss")
    expect(classifyDispatch(0, 0, 0)).toBe("miss")
  })
})

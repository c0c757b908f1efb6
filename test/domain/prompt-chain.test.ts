import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { chainOfWords, commonBlocks, promptChain, promptWords } from "../../src/domain/prompt-chain.js"

const MODEL = "m/Model-7B"
const words = (n: number, tag = "w") => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ")

describe("promptWords: the rendered prompt", () => {
  it("is each message's role marker and content words, in order, then the raw prompt's words", () => {
    expect(
      promptWords({
        model: MODEL,
        messages: [
          { role: "system", content: "Be  brief.\n" },
          { role: "user", content: " Hi there " }
        ],
        prompt: "and more"
      })
    ).toEqual(["<|system|>", "Be", "brief.", "<|user|>", "Hi", "there", "and", "more"])
    expect(promptWords({ model: MODEL })).toEqual([])
  })
})

describe("promptChain", () => {
  it("hashes full blocks only; tokens count the partial tail too", () => {
    const chain = promptChain({ model: MODEL, prompt: words(40) }, 16)
    expect(chain.blockTokens).toBe(16)
    expect(chain.hashes).toHaveLength(2)
    expect(chain.tokens).toBe(40)
    expect(promptChain({ model: MODEL, prompt: words(15) }, 16).hashes).toHaveLength(0)
  })

  it("a conversation's next turn keeps every full block of the previous turn", () => {
    const turn1 = [
      { role: "system", content: words(100, "s") },
      { role: "user", content: words(30, "u") }
    ]
    const turn2 = [...turn1, { role: "assistant", content: words(50, "a") }, { role: "user", content: words(20, "v") }]
    const a = promptChain({ model: MODEL, messages: turn1 })
    const b = promptChain({ model: MODEL, messages: turn2 })
    expect(a.hashes.length).toBe(Math.floor(132 / 16))
    expect(commonBlocks(a, b)).toBe(a.hashes.length)
    expect(b.hashes.slice(0, a.hashes.length)).toEqual(a.hashes)
  })

  it("a difference anywhere changes every hash from its block on (the chain), not before", () => {
    const base = words(64).split(" ")
    const changed = [...base]
    changed[20] = "different"
    const a = chainOfWords(MODEL, base, 16)
    const b = chainOfWords(MODEL, changed, 16)
    expect(commonBlocks(a, b)).toBe(1)
    expect(a.hashes.slice(1).every((h, i) => h !== b.hashes[i + 1])).toBe(true)
  })

  it("the model, the roles and word boundaries are part of the prefix; whitespace is not", () => {
    const text = words(32)
    const chain = promptChain({ model: MODEL, prompt: text })
    expect(commonBlocks(chain, promptChain({ model: "other/model", prompt: text }))).toBe(0)
    expect(commonBlocks(chain, promptChain({ model: MODEL, prompt: text.replace(/ /g, "\n  ") }))).toBe(2)
    const asUser = promptChain({ model: MODEL, messages: [{ role: "user", content: text }] })
    const asSystem = promptChain({ model: MODEL, messages: [{ role: "system", content: text }] })
    expect(commonBlocks(asUser, asSystem)).toBe(0)
    expect(commonBlocks(chainOfWords(MODEL, ["ab", "c"], 2), chainOfWords(MODEL, ["a", "bc"], 2))).toBe(0)
  })

  it("chains of different block sizes share nothing", () => {
    const text = words(64)
    expect(commonBlocks(promptChain({ model: MODEL, prompt: text }, 16), promptChain({ model: MODEL, prompt: text }, 8))).toBe(0)
  })

  it("hashes are 53-bit integers, distinct over many different prompts", () => {
    const seen = new Set<number>()
    for (let i = 0; i < 20_000; i++) {
      const [h] = chainOfWords(MODEL, [`prompt-${i}`], 1).hashes
      expect(Number.isSafeInteger(h)).toBe(true)
      seen.add(h as number)
    }
    expect(seen.size).toBe(20_000)
  })

  it("property: commonBlocks of a prompt and any extension of it is all of the prompt's full blocks", () => {
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[a-z]{1,6}$/), { maxLength: 80 }),
        fc.array(fc.stringMatching(/^[a-z]{1,6}$/), { maxLength: 40 }),
        fc.integer({ min: 1, max: 16 }),
        (prefix, suffix, size) => {
          const a = chainOfWords(MODEL, prefix, size)
          const b = chainOfWords(MODEL, [...prefix, ...suffix], size)
          expect(commonBlocks(a, b)).toBe(Math.floor(prefix.length / size))
          expect(b.tokens).toBe(prefix.length + suffix.length)
        }
      )
    )
  })
})

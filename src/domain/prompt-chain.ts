import { contentText, type MessageContent } from "./inference.js"

/**
 * A prompt as a chain of hashed blocks: the shared vocabulary of prefix caching (issue 16).
 *
 * Both sides use it: the controller's affinity index remembers which chains each worker has
 * served (src/controller/prefix-affinity.ts), and the synthetic engine models its own prompt cache
 * with it (src/worker/engines/prefill-cache.ts). It lives in the domain because both roles import
 * it; it is not a wire shape, and the two sides never compare hashes with each other.
 *
 * - **Rendering.** Chat messages in order, each as a role marker word (`<|user|>`) followed by the
 *   words of its content; then the words of a raw `prompt`, if any. Only the order and the words
 *   count, so whitespace differences do not break a prefix.
 * - **Approximate tokens are whitespace-separated words.** No tokenizer is needed, the count agrees
 *   with what the engines without a tokenizer report (`countPromptTokens` in domain/inference.ts, plus one word per role
 *   marker), and block boundaries never move when text is appended: a new turn leaves every
 *   earlier block unchanged. English runs at about 1.3 BPE tokens per word, so a block of 16 words
 *   is roughly the 16–32-token pages of vLLM or mlx-lm. (Fixed ~4-character slices would work too,
 *   but would cut words and hash more, smaller pieces.)
 * - **Blocks and chain.** The words are cut into blocks of `blockTokens`; only full blocks are
 *   hashed (the partial tail changes with the next append, like the last page of a paged KV cache).
 *   Block i's hash is seeded with block i−1's, and block 0's with the model name, so equal hashes
 *   mean (up to collisions) an equal prefix of the same model: a shared prefix shares hashes.
 * - **Hash.** 53 bits (cyrb53-style, two 32-bit lanes) so that a JS number holds it exactly. A
 *   collision only makes a prefix look cached when it is not: a worse routing guess, never a wrong
 *   answer.
 */

export interface PromptInput {
  readonly model: string
  /** Only the text of each message counts (its text parts, for a parts array). */
  readonly messages?: ReadonlyArray<{ readonly role: string; readonly content?: MessageContent | undefined }> | undefined
  readonly prompt?: string | undefined
}

export interface PromptChain {
  /** Words per block. */
  readonly blockTokens: number
  /** `hashes[i]` stands for blocks 0..i together (the whole prefix), not block i alone. */
  readonly hashes: ReadonlyArray<number>
  /** Approximate tokens of the whole prompt: the full blocks and the partial tail. */
  readonly tokens: number
}

/** Words per block unless configured otherwise. */
export const DEFAULT_BLOCK_TOKENS = 16

const WHITESPACE = /\s+/

const wordsOf = (text: string): ReadonlyArray<string> => text.split(WHITESPACE).filter((w) => w.length > 0)

/** The rendered prompt as approximate tokens (see the module comment). */
export const promptWords = (input: PromptInput): ReadonlyArray<string> => {
  const words: Array<string> = []
  for (const message of input.messages ?? []) {
    words.push(`<|${message.role}|>`)
    for (const word of wordsOf(contentText(message.content))) words.push(word)
  }
  if (input.prompt !== undefined) for (const word of wordsOf(input.prompt)) words.push(word)
  return words
}

const TWO_32 = 4294967296

/** Hash of `words[from, to)` seeded with the previous hash of the chain: 53 bits. */
const hashBlock = (previous: number, words: ReadonlyArray<string>, from: number, to: number): number => {
  // The two 32-bit lanes start from the previous hash's low and high halves.
  let h1 = 0xdeadbeef ^ (previous >>> 0)
  let h2 = 0x41c6ce57 ^ Math.floor(previous / TWO_32)
  for (let i = from; i < to; i++) {
    const word = words[i] ?? ""
    for (let j = 0; j < word.length; j++) {
      const c = word.charCodeAt(j)
      h1 = Math.imul(h1 ^ c, 2654435761)
      h2 = Math.imul(h2 ^ c, 1597334677)
    }
    // A separator, so that ["ab", "c"] and ["a", "bc"] differ.
    h1 = Math.imul(h1 ^ 32, 2654435761)
    h2 = Math.imul(h2 ^ 32, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507)
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507)
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return TWO_32 * (0x1fffff & h2) + (h1 >>> 0)
}

/** The chain of `words` for `model`, in blocks of `blockTokens` (a positive integer). */
export const chainOfWords = (model: string, words: ReadonlyArray<string>, blockTokens: number): PromptChain => {
  const size = Math.max(1, Math.floor(blockTokens))
  const full = Math.floor(words.length / size)
  const hashes: Array<number> = new Array<number>(full)
  let previous = hashBlock(0, [model], 0, 1)
  for (let b = 0; b < full; b++) {
    previous = hashBlock(previous, words, b * size, (b + 1) * size)
    hashes[b] = previous
  }
  return { blockTokens: size, hashes, tokens: words.length }
}

/** The chain of a request's prompt (chat messages or raw prompt). */
export const promptChain = (input: PromptInput, blockTokens: number = DEFAULT_BLOCK_TOKENS): PromptChain =>
  chainOfWords(input.model, promptWords(input), blockTokens)

/** Blocks the two chains share from their start (0 when their block sizes differ). */
export const commonBlocks = (a: PromptChain, b: PromptChain): number => {
  if (a.blockTokens !== b.blockTokens) return 0
  const n = Math.min(a.hashes.length, b.hashes.length)
  let i = 0
  while (i < n && a.hashes[i] === b.hashes[i]) i++
  return i
}

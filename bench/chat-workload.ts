/**
 * The chat scenario's workload (issue 16), deterministic from a seed: multi-turn conversations
 * over a few shared system prompts ("personas", as the apps of one deployment share theirs).
 *
 * A conversation's turn t sends its persona's system prompt, then every earlier user message and
 * the answer the cluster gave to it, then a new user message: the prompt grows by one exchange per
 * turn, so each turn's prompt starts with the whole previous one (what a prefix cache exploits).
 * The answers are the model's, so they are known only when the previous turn has ended.
 */
import { prng } from "../src/worker/engines/synthetic-engine.js"

const WORDS = [
  "you", "are", "a", "helpful", "assistant", "for", "the", "team", "answer", "questions", "about", "code", "data",
  "cluster", "model", "request", "latency", "memory", "cache", "token", "prompt", "user", "always", "never", "be",
  "concise", "explain", "steps", "when", "asked", "reply", "in", "plain", "language", "with", "examples", "and",
  "cite", "sources", "if", "unsure", "say", "so", "format", "lists", "tables", "markdown", "keep", "tone",
  "friendly", "professional", "avoid", "jargon", "check", "facts", "summarize", "long", "documents", "translate",
  "text", "write", "tests", "review", "changes", "suggest", "fixes", "describe", "tradeoffs", "plan", "tasks",
  "schedule", "meetings", "draft", "emails", "report", "numbers", "compare", "options", "list", "risks", "how",
  "why", "what", "which", "could", "should", "would", "please", "thanks", "today", "tomorrow", "project", "issue"
] as const

const wordsOf = (next: () => number, count: number): string => {
  const out: Array<string> = []
  for (let i = 0; i < count; i++) out.push(WORDS[Math.floor(next() * WORDS.length)] ?? "the")
  return out.join(" ")
}

const between = (next: () => number, min: number, max: number) => min + Math.floor(next() * (max - min + 1))

export interface WorkloadOptions {
  readonly conversations: number
  readonly turns: number
  readonly personas: number
  /** Words of each persona's system prompt: uniformly in [min, max]. */
  readonly systemWords: readonly [number, number]
  /** Words of each user message: uniformly in [min, max]. */
  readonly userWords: readonly [number, number]
  readonly seed: number
}

export interface Conversation {
  readonly id: number
  readonly persona: number
  /** The system prompt (its persona's). */
  readonly system: string
  /** One user message per turn. */
  readonly userMessages: ReadonlyArray<string>
}

/** The conversations of a run; conversation i uses persona i mod `personas`. */
export const makeWorkload = (options: WorkloadOptions): ReadonlyArray<Conversation> => {
  const next = prng(options.seed)
  const personas = Array.from({ length: options.personas }, (_, p) => {
    // A distinct opening per persona, so that two system prompts never share a first block.
    return `Persona ${p}: ${wordsOf(next, between(next, ...options.systemWords))}`
  })
  return Array.from({ length: options.conversations }, (_, id) => {
    const persona = id % options.personas
    return {
      id,
      persona,
      system: personas[persona] ?? "",
      userMessages: Array.from({ length: options.turns }, (_, t) => `Turn ${t + 1} of ${id}: ${wordsOf(next, between(next, ...options.userWords))}`)
    }
  })
}

export interface Message {
  readonly role: "system" | "user" | "assistant"
  readonly content: string
}

/** The messages of `conversation`'s turn `turn` (0-based), given the answers of its earlier turns. */
export const messagesFor = (conversation: Conversation, turn: number, answers: ReadonlyArray<string>): ReadonlyArray<Message> => {
  const messages: Array<Message> = [{ role: "system", content: conversation.system }]
  for (let t = 0; t <= turn; t++) {
    if (t > 0) messages.push({ role: "assistant", content: answers[t - 1] ?? "" })
    messages.push({ role: "user", content: conversation.userMessages[t] ?? "" })
  }
  return messages
}

import { Schema } from "effect"
import type { ChatMessage, InferenceEndpoint } from "./inference.js"

/**
 * Capabilities: what an engine honours beyond plain text generation (issue 12). A worker says, per
 * model, which of these its engine honours (`WorkerCapabilities.features`, `.modelFeatures`); a
 * request that uses one only goes to a worker that honours it, and when no worker serving the
 * model does, the client gets a 400 naming the parameter — a field is never accepted and ignored.
 *
 * Most features are named after the request parameter that needs them. Two are not:
 * `completions` (the legacy `/v1/completions` route, served as a raw prompt, without a chat
 * template) and `multimodal` (content parts other than text: `image_url`, `input_audio`, `file`).
 * Parameters outside this list (`user`, `metadata`, `top_k`, a provider's own) need no capability:
 * they travel to the engine unchanged, and engines that talk to a server pass them on.
 */
export const FEATURES = [
  "tools",
  "response_format",
  "logprobs",
  "seed",
  "presence_penalty",
  "frequency_penalty",
  "logit_bias",
  "completions",
  "echo",
  "suffix",
  "multimodal"
] as const
export type Feature = (typeof FEATURES)[number]

/** A feature name as the config and the registration spell it. */
export const FeatureName = Schema.Literal(...FEATURES)

/**
 * What a worker that registered without a feature list (an older version) is taken to honour: plain
 * generation, on both routes, as it always did.
 */
export const LEGACY_FEATURES: ReadonlyArray<Feature> = ["completions"]

/**
 * What an OpenAI-compatible server typically honours (vLLM, llama.cpp's server, LM Studio, Ollama,
 * OpenAI itself): every feature but `echo` and `suffix`, which few of them implement. The default
 * of `worker.engine.openai.features`, which replaces it for servers that do less (or more).
 */
export const DEFAULT_OPENAI_FEATURES: ReadonlyArray<Feature> = FEATURES.filter((f) => f !== "echo" && f !== "suffix")

/**
 * What `mlx_lm.server` honours, read from its source (ml-explore/mlx-lm, `mlx_lm/server.py`):
 * `tools` (when the model's chat template has tool calling; otherwise it answers 400, which the
 * client now sees), `seed`, `presence_penalty`, `frequency_penalty`, `logit_bias` and the raw
 * `/v1/completions` route. Not: `response_format` (never read), `logprobs` (only in the last chunk
 * of a stream and not in OpenAI's shape), `echo`, `suffix`, content parts other than text.
 */
export const MLX_LM_FEATURES: ReadonlyArray<Feature> = ["tools", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "completions"]

/** One capability a request needs, and the parameter of the request that needs it (for the 400). */
export interface Requirement {
  readonly feature: Feature
  readonly param: string
}

/** What the requirements are computed from: the route's request as the controller forwards it. */
export interface RequirementInput {
  readonly endpoint?: InferenceEndpoint | undefined
  readonly params?: Readonly<Record<string, unknown>> | undefined
  readonly messages?: ReadonlyArray<ChatMessage> | undefined
}

const present = (u: unknown): boolean => u !== undefined && u !== null
const nonEmptyArray = (u: unknown): boolean => Array.isArray(u) && u.length > 0
const nonZero = (u: unknown): boolean => typeof u === "number" ? u !== 0 : present(u)

/** Tool calling in the history: an assistant's calls, a tool's (or a function's) result. */
const toolHistory = (messages: ReadonlyArray<ChatMessage>): string | undefined => {
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as ChatMessage
    if (nonEmptyArray(m.tool_calls)) return `messages[${i}].tool_calls`
    if (present(m["function_call"])) return `messages[${i}].function_call`
    if (m.role === "tool" || m.role === "function") return `messages[${i}].role`
  }
  return undefined
}

/** The first content part that is not text. */
const nonTextPart = (messages: ReadonlyArray<ChatMessage>): string | undefined => {
  for (let i = 0; i < messages.length; i++) {
    const content = (messages[i] as ChatMessage).content
    if (!Array.isArray(content)) continue
    for (let j = 0; j < content.length; j++) {
      const part = content[j]
      if (part !== undefined && part.type !== "text") return `messages[${i}].content[${j}].type`
    }
  }
  return undefined
}

/**
 * The capabilities `input` needs, each with the parameter that needs it, in a fixed order. Values
 * that change nothing need nothing: `logprobs: false`, a penalty of 0, `response_format: text`,
 * an empty `logit_bias`, `tool_choice: "none"`, `echo: false`, an empty `suffix`.
 */
export const requirementsOf = (input: RequirementInput): ReadonlyArray<Requirement> => {
  const p = input.params ?? {}
  const out: Array<Requirement> = []
  const need = (feature: Feature, param: string) => {
    if (!out.some((r) => r.feature === feature)) out.push({ feature, param })
  }
  const completions = input.endpoint === "completions" || (input.endpoint === undefined && input.messages === undefined)
  if (input.endpoint === "completions") need("completions", "prompt")
  if (nonEmptyArray(p["tools"])) need("tools", "tools")
  if (present(p["tool_choice"]) && p["tool_choice"] !== "none") need("tools", "tool_choice")
  if (nonEmptyArray(p["functions"])) need("tools", "functions")
  if (present(p["function_call"]) && p["function_call"] !== "none") need("tools", "function_call")
  const history = input.messages === undefined ? undefined : toolHistory(input.messages)
  if (history !== undefined) need("tools", history)
  const format = p["response_format"]
  if (typeof format === "object" && format !== null && (format as { type?: unknown }).type !== "text") need("response_format", "response_format")
  if (completions ? present(p["logprobs"]) : p["logprobs"] === true) need("logprobs", "logprobs")
  if (typeof p["top_logprobs"] === "number" && p["top_logprobs"] > 0) need("logprobs", "top_logprobs")
  if (present(p["seed"])) need("seed", "seed")
  if (nonZero(p["presence_penalty"])) need("presence_penalty", "presence_penalty")
  if (nonZero(p["frequency_penalty"])) need("frequency_penalty", "frequency_penalty")
  const bias = p["logit_bias"]
  if (typeof bias === "object" && bias !== null && Object.keys(bias).length > 0) need("logit_bias", "logit_bias")
  if (p["echo"] === true) need("echo", "echo")
  if (typeof p["suffix"] === "string" && p["suffix"].length > 0) need("suffix", "suffix")
  const part = input.messages === undefined ? undefined : nonTextPart(input.messages)
  if (part !== undefined) need("multimodal", part)
  return out
}

/** What a worker's engine honours for `model`: its per-model list, else its list, else the legacy set. */
export const featuresFor = (
  capabilities: { readonly features?: ReadonlyArray<string> | undefined; readonly modelFeatures?: Readonly<Record<string, ReadonlyArray<string>>> | undefined },
  model: string
): ReadonlyArray<string> => {
  const perModel = capabilities.modelFeatures
  if (perModel !== undefined && Object.prototype.hasOwnProperty.call(perModel, model)) return perModel[model] ?? []
  return capabilities.features ?? LEGACY_FEATURES
}

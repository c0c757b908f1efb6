import { Either, Option, type Schema } from "effect"
import { type DecodeIssue, guardedDecoder } from "../domain/decode.js"
import { InvalidRequest } from "../domain/errors.js"
import { requirementsOf } from "../domain/features.js"
import type { ChatMessage } from "../domain/inference.js"
import type { ChatCompletionRequest, CompletionRequest } from "../domain/openai.js"
import type { RouteRequest } from "../domain/route.js"
import { maxTokensOf, type TokenLimits } from "./route-request.js"

/** OpenAI's phrasing for a field that failed its schema, naming the field as a dotted path. */
export const describeIssue = (issue: DecodeIssue): InvalidRequest =>
  issue.path === ""
    ? new InvalidRequest({ message: `Invalid request body: ${issue.message}` })
    : issue.kind === "Missing"
      ? new InvalidRequest({ message: `Missing required parameter: '${issue.path}'.`, param: issue.path })
      : new InvalidRequest({ message: `Invalid value for '${issue.path}': ${issue.message}`, param: issue.path })

/**
 * Decodes a parsed JSON body with `schema`; the first failing field becomes an `InvalidRequest`.
 * Through the guarded decoder: a body nested 100k deep is a 400 naming the field, never a crash.
 */
export const decodeBody = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = guardedDecoder(schema)
  return (json: unknown): Either.Either<A, InvalidRequest> => Either.mapLeft(decode(json), describeIssue)
}

/** JSON text → value; malformed JSON is OpenAI's 400, not an empty body. */
export const parseJson = (text: string): Either.Either<unknown, InvalidRequest> =>
  Either.try({
    try: () => JSON.parse(text) as unknown,
    catch: (cause) =>
      new InvalidRequest({
        message: `We could not parse the JSON body of your request (${cause instanceof Error ? cause.message : "invalid JSON"}). The body must be a JSON object.`
      })
  })

const stopOf = (stop: string | ReadonlyArray<string> | null | undefined): Option.Option<ReadonlyArray<string>> =>
  stop === null || stop === undefined ? Option.none() : Option.some(typeof stop === "string" ? [stop] : stop)

const optional = <K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } =>
  (value === null || value === undefined ? {} : { [key]: value }) as { [P in K]?: V }

/**
 * Fields the controller itself reads and maps to the bus's contract fields (`maxTokens`,
 * `temperature`, `topP`, `stop`, the model, the prompt) or keeps for itself (`stream`,
 * `stream_options`, the cluster's `tags` and `priority`): every other field is `params`.
 * `max_completion_tokens` is both: `maxTokens` takes its value, `params` keeps the client's spelling.
 */
const CONTROLLER_FIELDS: ReadonlySet<string> = new Set([
  "model",
  "messages",
  "prompt",
  "max_tokens",
  "temperature",
  "top_p",
  "stop",
  "stream",
  "stream_options",
  "tags",
  "priority"
])

/** Every field of `body` the controller does not map itself, as the client sent it. */
export const paramsOf = (body: Readonly<Record<string, unknown>>): Record<string, unknown> | undefined => {
  let params: Record<string, unknown> | undefined
  for (const key of Object.keys(body)) {
    // `__proto__` (an own member after JSON.parse) would set the copy's prototype: never a field.
    if (CONTROLLER_FIELDS.has(key) || key === "__proto__") continue
    params ??= {}
    params[key] = body[key]
  }
  return params
}

const sampling = (body: ChatCompletionRequest | CompletionRequest) => ({
  ...optional("temperature", body.temperature),
  ...optional("topP", body.top_p),
  ...optional("stop", Option.getOrUndefined(stopOf(body.stop))),
  ...optional("tags", body.tags),
  ...optional("priority", body.priority)
})

const oneChoice = (param: "n" | "best_of", value: number | null | undefined): Either.Either<void, InvalidRequest> =>
  value === null || value === undefined || value === 1
    ? Either.void
    : Either.left(
        new InvalidRequest({ message: `Unsupported value: '${param}' must be 1: this cluster answers one choice per request (got ${value})`, param })
      )

/**
 * What OpenAI checks of messages beyond their schema: content is required but for an assistant
 * turn (which may only call tools); a text part carries its `text`.
 */
const checkMessages = (messages: ReadonlyArray<ChatMessage>): Either.Either<void, InvalidRequest> => {
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as ChatMessage
    if (m.content === undefined && m.role !== "assistant") {
      return Either.left(new InvalidRequest({ message: `Missing required parameter: 'messages[${i}].content'.`, param: `messages[${i}].content` }))
    }
    if (Array.isArray(m.content)) {
      for (let j = 0; j < m.content.length; j++) {
        const part = m.content[j]
        if (part?.type === "text" && typeof part["text"] !== "string") {
          const param = `messages[${i}].content[${j}].text`
          return Either.left(new InvalidRequest({ message: `Missing required parameter: '${param}'.`, param }))
        }
      }
    }
  }
  return Either.void
}

/** The legacy function calling of 2023 (`functions`, `function_call`): its answers are not relayed, so it is refused. */
const noLegacyFunctions = (body: Readonly<Record<string, unknown>>): Either.Either<void, InvalidRequest> => {
  for (const param of ["functions", "function_call"]) {
    if (body[param] !== undefined && body[param] !== null) {
      return Either.left(
        new InvalidRequest({ message: `Unsupported parameter: '${param}' (deprecated function calling) is not supported: use 'tools' and 'tool_choice'`, param })
      )
    }
  }
  return Either.void
}

/** With the params and the route, what a worker must honour to serve it. */
const withRequirements = (request: RouteRequest): RouteRequest => {
  const requires = requirementsOf(request)
  // The spread last: a spread followed by more properties costs V8 a new hidden class per object.
  return requires.length === 0 ? request : { requires, ...request }
}

/**
 * A chat request as the Router takes it: every message as the client sent it, every other field in
 * `params`, `max_tokens` checked against the ceiling, and the capabilities it needs.
 */
export const chatToRoute = (body: ChatCompletionRequest, limits: TokenLimits): Either.Either<RouteRequest, InvalidRequest> => {
  // Plain Either steps, not `Either.gen`: this runs on every request, and a generator function made
  // per call costs V8 an initial map in old space that keeps the request alive (controller/router.ts).
  const spelled = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens"
  return Either.all([oneChoice("n", body.n), noLegacyFunctions(body), checkMessages(body.messages)]).pipe(
    Either.flatMap(() => maxTokensOf(body.max_completion_tokens ?? body.max_tokens, limits, spelled)),
    Either.map((maxTokens) =>
      withRequirements({
        model: body.model,
        messages: body.messages,
        route: "chat",
        endpoint: "chat",
        ...optional("maxTokens", maxTokens),
        ...optional("params", paramsOf(body)),
        ...sampling(body)
      })
    )
  )
}

/** A legacy completion request as the Router takes it: the raw prompt, to be completed as is. */
export const completionToRoute = (body: CompletionRequest, limits: TokenLimits): Either.Either<RouteRequest, InvalidRequest> =>
  Either.all([oneChoice("n", body.n), oneChoice("best_of", body.best_of)]).pipe(
    Either.flatMap(() => maxTokensOf(body.max_tokens, limits)),
    Either.map((maxTokens) =>
      withRequirements({
        model: body.model,
        prompt: typeof body.prompt === "string" ? body.prompt : body.prompt.join(""),
        route: "completions",
        endpoint: "completions",
        ...optional("maxTokens", maxTokens),
        ...optional("params", paramsOf(body)),
        ...sampling(body)
      })
    )
  )

import { Either, Option, type Schema } from "effect"
import type { ChatMessage } from "../domain/inference.js"
import { type DecodeIssue, guardedDecoder } from "../domain/decode.js"
import { InvalidRequest } from "../domain/errors.js"
import type { ChatCompletionRequest, CompletionRequest, OpenAiChatMessage } from "../domain/openai.js"
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

const contentText = (content: OpenAiChatMessage["content"]): string =>
  content === null ? "" : typeof content === "string" ? content : content.map((part) => part.text).join("")

const stopOf = (stop: string | ReadonlyArray<string> | null | undefined): Option.Option<ReadonlyArray<string>> =>
  stop === null || stop === undefined ? Option.none() : Option.some(typeof stop === "string" ? [stop] : stop)

const optional = <K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } =>
  (value === null || value === undefined ? {} : { [key]: value }) as { [P in K]?: V }

const sampling = (body: ChatCompletionRequest | CompletionRequest) => ({
  ...optional("temperature", body.temperature),
  ...optional("topP", body.top_p),
  ...optional("stop", Option.getOrUndefined(stopOf(body.stop))),
  ...optional("tags", body.tags),
  ...optional("priority", body.priority)
})

/** A chat request as the Router takes it: every role kept, text content flattened, limits applied. */
export const chatToRoute = (body: ChatCompletionRequest, limits: TokenLimits): RouteRequest => ({
  model: body.model,
  messages: body.messages.map((m): ChatMessage => ({ role: m.role, content: contentText(m.content) })),
  maxTokens: maxTokensOf(body.max_completion_tokens ?? body.max_tokens, limits),
  route: "chat",
  ...sampling(body)
})

export const completionToRoute = (body: CompletionRequest, limits: TokenLimits): RouteRequest => ({
  model: body.model,
  prompt: typeof body.prompt === "string" ? body.prompt : body.prompt.join(""),
  maxTokens: maxTokensOf(body.max_tokens, limits),
  route: "completions",
  ...sampling(body)
})

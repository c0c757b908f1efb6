import { Either, Option, ParseResult, Schema } from "effect"
import type { ChatMessage } from "../domain/inference.js"
import { InvalidRequest } from "../domain/errors.js"
import type { ChatCompletionRequest, CompletionRequest, OpenAiChatMessage } from "../domain/openai.js"
import type { RouteRequest } from "../domain/route.js"
import { maxTokensOf, type TokenLimits } from "./route-request.js"

/** OpenAI's phrasing for a field that failed its schema, naming the field as a dotted path. */
export const describeIssue = (issue: ParseResult.ArrayFormatterIssue): InvalidRequest => {
  const param = issue.path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join("")
  if (param === "") return new InvalidRequest({ message: `Invalid request body: ${issue.message}` })
  return issue._tag === "Missing"
    ? new InvalidRequest({ message: `Missing required parameter: '${param}'.`, param })
    : new InvalidRequest({ message: `Invalid value for '${param}': ${issue.message}`, param })
}

/**
 * Decodes a parsed JSON body with `schema`; the first failing field becomes an `InvalidRequest`.
 * A body nested so deep that checking it exhausts the stack is a 400 as well, never a crash.
 */
export const decodeBody = <A, I>(schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknownEither(schema, { errors: "first", onExcessProperty: "ignore" })
  return (json: unknown): Either.Either<A, InvalidRequest> => {
    try {
      return Either.mapLeft(decode(json), (error) => {
        const [first] = ParseResult.ArrayFormatter.formatErrorSync(error)
        return first === undefined ? new InvalidRequest({ message: "Invalid request body" }) : describeIssue(first)
      })
    } catch {
      return Either.left(new InvalidRequest({ message: "Invalid request body: it is nested too deeply to be checked" }))
    }
  }
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

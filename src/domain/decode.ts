import { Either, Option, ParseResult, Schema, SchemaAST } from "effect"
import { sanitizeForLog } from "./log-text.js"

/**
 * One guarded way to decode untrusted JSON with a Schema, for every door (HTTP bodies, WebSocket
 * frames, NATS messages): it never throws, whatever the input.
 *
 * - Values nested deeper than `maxDepth` are refused before the schema sees them, by an iterative
 *   walk that names the path where the bound is crossed. (A schema check or an error formatter
 *   recurses; 100k levels of `[[[…]]]` exhaust the stack.)
 * - A stack overflow or any other exception inside the decode or the formatting is still caught and
 *   becomes an ordinary failure.
 * - A failure is the first issue only, as `{ path, message, kind }` built from ParseResult's
 *   structured issues (the issue tree, then ArrayFormatter for the one issue chosen): the path is
 *   `messages[0].content`, the message the issue's own text, cut and with control characters
 *   escaped, so that it is safe to log and to put in a 400 body. A value that matches none of a
 *   union's members is one issue naming them all (`Expected "system" | "user", actual "bot"`).
 */

/** How deep a message may nest by default: generous for any real request, far from the stack's limit. */
export const MAX_JSON_DEPTH = 64

/**
 * What kind of problem: ArrayFormatter's tags (`Missing` for an absent required field, `Type`,
 * `Refinement`, `Unexpected`, …), `TooDeep` for the depth bound, `Unchecked` when the check itself
 * failed (a stack overflow).
 */
export type DecodeIssueKind = ParseResult.ArrayFormatterIssue["_tag"] | "TooDeep" | "Unchecked"

/** The first problem of a value that failed to decode; `path` is `""` for the value itself. */
export interface DecodeIssue {
  readonly path: string
  readonly message: string
  readonly kind: DecodeIssueKind
  /**
   * For a value of the wrong type or failing a check: what was expected, one entry per alternative
   * of a union, each as its schema describes itself (`String(ast)`: identifier, title or shape).
   * Read from the AST, not from the message text, so a rewording in Effect cannot break callers.
   */
  readonly expected?: ReadonlyArray<string>
  /** The value found there (for `Type` and `Refinement` issues). */
  readonly actual?: unknown
  /** `message` was written by the schema itself (a `message` annotation): it says more than `expected`. */
  readonly custom?: boolean
}

export interface GuardOptions {
  /** Containers (objects, arrays) allowed inside each other; default `MAX_JSON_DEPTH`. */
  readonly maxDepth?: number
}

const MAX_PATH_CHARS = 120
const MAX_MESSAGE_CHARS = 300

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

/** One path segment as code would write it after `prefix` (empty at the start). */
const segment = (key: PropertyKey, first: boolean): string =>
  typeof key === "number"
    ? `[${key}]`
    : typeof key === "string" && IDENTIFIER.test(key)
      ? first ? key : `.${key}`
      : `[${JSON.stringify(typeof key === "string" ? key : String(key))}]`

/** A segment repeated at least this often in a row is written once with `×N`. */
const REPEAT_RUN = 4

/**
 * `["messages", 0, "content"]` → `messages[0].content`; odd keys are quoted (`["a b"]`); a run of
 * one segment is written once with its count (`model[0]×64`, the path of JSON nested too deep,
 * so that the reason after it stays in view); long paths are cut.
 */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string => {
  let out = ""
  for (let i = 0; i < path.length; ) {
    let run = 1
    while (i + run < path.length && path[i + run] === path[i]) run++
    const one = segment(path[i] as PropertyKey, out === "")
    if (run >= REPEAT_RUN) {
      out += `${one}×${run}`
      i += run
    } else {
      out += one
      i += 1
    }
    if (out.length > MAX_PATH_CHARS) return sanitizeForLog(out, MAX_PATH_CHARS)
  }
  return sanitizeForLog(out, MAX_PATH_CHARS)
}

/** `messages[0].content: Expected string, actual 5`, or just the message at the top level. */
export const formatIssue = (issue: DecodeIssue): string => (issue.path === "" ? issue.message : `${issue.path}: ${issue.message}`)

interface Frame {
  readonly node: object
  readonly depth: number
  readonly parent: Frame | undefined
  readonly key: PropertyKey | undefined
}

const pathOf = (frame: Frame): ReadonlyArray<PropertyKey> => {
  const keys: Array<PropertyKey> = []
  for (let f: Frame | undefined = frame; f !== undefined && f.key !== undefined; f = f.parent) keys.push(f.key)
  return keys.reverse()
}

/**
 * The path of the first container (in document order) that lies deeper than `maxDepth`, or
 * `undefined` when the value stays within it. The value itself is depth 1 when it is an object or
 * an array. Iterative: any depth, no recursion. A cyclic value counts as too deep.
 */
export const findTooDeep = (value: unknown, maxDepth: number = MAX_JSON_DEPTH): ReadonlyArray<PropertyKey> | undefined => {
  if (typeof value !== "object" || value === null) return undefined
  const stack: Array<Frame> = [{ node: value, depth: 1, parent: undefined, key: undefined }]
  while (stack.length > 0) {
    const frame = stack.pop() as Frame
    if (frame.depth > maxDepth) return pathOf(frame)
    // Children are pushed in reverse so that the first one is looked at first. Only containers are
    // pushed: this runs on every NATS message, so it allocates nothing for a flat one.
    const depth = frame.depth + 1
    if (Array.isArray(frame.node)) {
      const items: ReadonlyArray<unknown> = frame.node
      for (let i = items.length - 1; i >= 0; i--) {
        const child = items[i]
        if (typeof child === "object" && child !== null) stack.push({ node: child, depth, parent: frame, key: i })
      }
    } else {
      const record = frame.node as Readonly<Record<string, unknown>>
      const keys = Object.keys(record)
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i] as string
        const child = record[key]
        if (typeof child === "object" && child !== null) stack.push({ node: child, depth, parent: frame, key })
      }
    }
  }
  return undefined
}

const describeThrown = (cause: unknown): string =>
  cause instanceof RangeError ? "too deeply nested to check" : `could not be checked (${cause instanceof Error ? cause.message : String(cause)})`

interface Located {
  readonly path: ReadonlyArray<PropertyKey>
  readonly issue: ParseResult.ParseIssue
}

/**
 * A union member's issue when it is "the value itself is of the wrong type" (seen through a
 * transformation or a refinement whose base failed, e.g. a mapping's encoded side): the `Type`
 * issue, whose AST says what that member expected. Anything deeper (a field of the member) is not.
 */
const typeIssueHere = (issue: ParseResult.ParseIssue): ParseResult.Type | undefined => {
  let current = issue
  while (current._tag === "Transformation" || (current._tag === "Refinement" && current.kind === "From")) current = current.issue
  return current._tag === "Type" ? current : undefined
}

/**
 * The first issue of the tree, following pointers (fields, indexes) and the first member of each
 * composite. A union whose members all failed on the value itself becomes one `Type` issue of the
 * whole union, so that its message names every alternative.
 */
const locateFirst = (issue: ParseResult.ParseIssue, path: ReadonlyArray<PropertyKey>): Located => {
  let current = issue
  let at = path
  for (;;) {
    if (current._tag === "Pointer") {
      at = at.concat(Array.isArray(current.path) ? (current.path as ReadonlyArray<PropertyKey>) : [current.path as PropertyKey])
      current = current.issue
      continue
    }
    // A refinement whose base already failed, or a transformation's side, wraps the issue that matters.
    if ((current._tag === "Refinement" && current.kind === "From") || current._tag === "Transformation") {
      current = current.issue
      continue
    }
    if (current._tag === "Composite") {
      const members: ReadonlyArray<ParseResult.ParseIssue> = Array.isArray(current.issues) ? current.issues : [current.issues as ParseResult.ParseIssue]
      if (SchemaAST.isUnion(current.ast)) {
        const here = members.map(typeIssueHere)
        if (here.every((m) => m !== undefined)) {
          const union = SchemaAST.Union.make(here.map((m) => m.ast).filter((t) => !SchemaAST.isUndefinedKeyword(t)))
          return { path: at, issue: new ParseResult.Type(union, current.actual) }
        }
      }
      const first = members[0]
      if (first === undefined) return { path: at, issue: current }
      current = first
      continue
    }
    return { path: at, issue: current }
  }
}

/** A schema as an issue names it: a refinement by its description ("a positive number"), the rest as `String(ast)`. */
const describeExpected = (ast: SchemaAST.AST): string =>
  SchemaAST.isRefinement(ast)
    ? Option.getOrElse(
        Option.orElse(SchemaAST.getDescriptionAnnotation(ast), () => SchemaAST.getTitleAnnotation(ast)),
        () => String(ast)
      )
    : String(ast)

/** What a `Type` or `Refinement` issue expected and found, from its AST (see `DecodeIssue`). */
const expectation = (issue: ParseResult.ParseIssue): Pick<DecodeIssue, "expected" | "actual" | "custom"> => {
  if (issue._tag !== "Type" && issue._tag !== "Refinement") return {}
  const members = SchemaAST.isUnion(issue.ast) ? issue.ast.types : [issue.ast]
  return {
    expected: members.map(describeExpected),
    actual: issue.actual,
    custom: Option.isSome(SchemaAST.getMessageAnnotation(issue.ast))
  }
}

/**
 * The first issue of a ParseError as `{ path, message, kind }` (see the module comment). Never
 * throws: a formatter failure becomes a generic message.
 */
export const firstIssue = (error: ParseResult.ParseError): DecodeIssue => {
  try {
    const located = locateFirst(error.issue, [])
    const [first] = ParseResult.ArrayFormatter.formatIssueSync(located.issue)
    if (first === undefined) return { path: formatPath(located.path), message: "invalid value", kind: "Type" }
    return {
      path: formatPath(located.path.concat(first.path)),
      message: sanitizeForLog(first.message, MAX_MESSAGE_CHARS),
      kind: first._tag,
      ...expectation(located.issue)
    }
  } catch (cause) {
    return { path: "", message: `invalid value (${describeThrown(cause)})`, kind: "Unchecked" }
  }
}

/**
 * A decoder for `schema` that never throws (see the module comment). Build it once per schema
 * and reuse it: compiling a decoder per message would sit on the hot path.
 */
export const guardedDecoder = <A, I>(
  schema: Schema.Schema<A, I, never>,
  options: GuardOptions = {}
): ((input: unknown) => Either.Either<A, DecodeIssue>) => {
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH
  const decode = Schema.decodeUnknownEither(schema, { errors: "first" })
  return (input) => {
    const tooDeep = findTooDeep(input, maxDepth)
    if (tooDeep !== undefined) {
      return Either.left({ path: formatPath(tooDeep), message: `nested deeper than ${maxDepth} levels`, kind: "TooDeep" })
    }
    let result: Either.Either<A, ParseResult.ParseError>
    try {
      result = decode(input)
    } catch (cause) {
      return Either.left({ path: "", message: describeThrown(cause), kind: "Unchecked" })
    }
    return Either.isRight(result) ? Either.right(result.right) : Either.left(firstIssue(result.left))
  }
}

const cache = new WeakMap<Schema.Schema.Any, (input: unknown) => Either.Either<unknown, DecodeIssue>>()

/** `guardedDecoder(schema)` with the default depth, compiled on first use and cached per schema. */
export const decodeGuarded = <A, I>(schema: Schema.Schema<A, I, never>): ((input: unknown) => Either.Either<A, DecodeIssue>) => {
  let decode = cache.get(schema)
  if (decode === undefined) {
    decode = guardedDecoder(schema)
    cache.set(schema, decode)
  }
  return decode as (input: unknown) => Either.Either<A, DecodeIssue>
}

/** JSON text → value, with the parser's complaint as an issue at the top level. */
export const parseJson = (text: string): Either.Either<unknown, DecodeIssue> => {
  try {
    return Either.right(JSON.parse(text) as unknown)
  } catch (cause) {
    return Either.left({
      path: "",
      message: `not JSON (${sanitizeForLog(cause instanceof Error ? cause.message : String(cause), 120)})`,
      kind: "Type"
    })
  }
}

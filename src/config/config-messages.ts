import { Data, Either, ParseResult, Schema, SchemaAST } from "effect"
import { firstIssue, formatPath } from "../domain/decode.js"
import { clip } from "../domain/log-text.js"
import { ConfigFile } from "./schema.js"

/**
 * What a person editing the config reads when something is wrong: one line per problem, naming
 * the key in YAML spelling and the value found. Built on the structured issue of
 * `src/domain/decode.ts` (what was expected, what was found, read from the schema's AST) and on
 * the schema's own AST for the keys it knows, never on the wording of Effect's messages.
 */

/** A configuration that cannot be used. `message` is one line naming the source and the key. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly message: string
  /** The config file involved, as it was named; undefined when the problem is not in a file. */
  readonly file: string | undefined
  /** The key in YAML spelling, e.g. `cluster.controller.port`; undefined when there is none. */
  readonly keyPath: string | undefined
}> {}

/** Schema descriptions as a person editing YAML says them. */
const humanise = (expected: string): string =>
  expected
    .replace(/^Struct \((Encoded|Type) side\)$/, "a mapping")
    .replace(/^\{ .* \}$/s, "a mapping")
    .replace(/^ReadonlyArray<(.+)>$/, "a list of $1")

/** A value as shown in a config message: at most 80 characters. */
export const clipValue = (text: string): string => clip(text, 80)

/** A value found in the config, as YAML would have it written: strings quoted, the rest as JSON. */
const shown = (value: unknown): string => {
  if (value === undefined) return "nothing"
  try {
    return clipValue(JSON.stringify(value) ?? String(value))
  } catch {
    return clipValue(String(value))
  }
}

/**
 * The first problem of a decode failure, in one line: its key path and `expected X | Y, got Z`
 * (a union's alternatives merged, the `undefined` of optional keys left out), or the schema's own
 * message (`a worker id may hold only …, got "a.b"`).
 */
export const describeParseError = (error: ParseResult.ParseError): { readonly keyPath: string; readonly problem: string } => {
  const issue = firstIssue(error)
  const { expected, actual, custom } = issue
  const problem =
    expected === undefined
      ? issue.message
      : custom === true
        ? `${issue.message}, got ${shown(actual)}`
        : `expected ${[...new Set(expected.map(humanise))].join(" | ")}, got ${shown(actual)}`
  return { keyPath: issue.path, problem }
}

const editDistance = (a: string, b: string): number => {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost)
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

/** The known key closest to `name`, when it is close enough to be a likely typo. */
const suggestion = (name: string, known: ReadonlyArray<string>): string | undefined => {
  let best: { key: string; distance: number } | undefined
  for (const key of known) {
    const distance = editDistance(name.toLowerCase(), key)
    if (best === undefined || distance < best.distance) best = { key, distance }
  }
  return best !== undefined && best.distance <= Math.max(2, Math.floor(name.length / 3)) ? best.key : undefined
}

/** The schemas a value at `path` may be decoded with (several under a union), on the encoded side. */
const schemasAt = (ast: SchemaAST.AST, path: ReadonlyArray<PropertyKey>): ReadonlyArray<SchemaAST.AST> => {
  const [key, ...rest] = path
  switch (ast._tag) {
    case "Refinement":
      return schemasAt(ast.from, path)
    case "Transformation":
      return schemasAt(ast.from, path)
    case "Suspend":
      return schemasAt(ast.f(), path)
    case "Union":
      return ast.types.flatMap((member) => schemasAt(member, path))
    default:
      break
  }
  if (key === undefined) return [ast]
  if (ast._tag === "TypeLiteral") {
    const property = ast.propertySignatures.find((p) => p.name === key)
    return property === undefined ? [] : schemasAt(property.type, rest)
  }
  if (ast._tag === "TupleType" && typeof key === "number") {
    const element = ast.elements[key]?.type ?? ast.rest[0]?.type
    return element === undefined ? [] : schemasAt(element, rest)
  }
  return []
}

const encodedConfig = SchemaAST.encodedAST(ConfigFile.ast)

/** The keys the config schema knows in the mapping at `path` (YAML spelling). */
export const knownKeysAt = (path: ReadonlyArray<PropertyKey>): ReadonlyArray<string> => [
  ...new Set(
    schemasAt(encodedConfig, path).flatMap((ast) =>
      ast._tag === "TypeLiteral" ? ast.propertySignatures.map((p) => String(p.name)) : []
    )
  )
]

/**
 * Keys present in `raw` that the schema does not know, as one warning line each (with a "did you
 * mean" when a known key is close). Such keys are ignored by the decode; listing them makes typos
 * such as `prot: 9000` visible.
 */
export const unknownKeys = (raw: unknown, label: string): ReadonlyArray<string> => {
  const result = Schema.decodeUnknownEither(ConfigFile)(raw, { errors: "all", onExcessProperty: "error" })
  if (Either.isRight(result)) return []
  const warnings: Array<string> = []
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(result.left)) {
    if (issue._tag !== "Unexpected") continue
    const name = String(issue.path[issue.path.length - 1] ?? "")
    const hint = suggestion(name, knownKeysAt(issue.path.slice(0, -1)))
    const line = `${label}: ${formatPath(issue.path)}: unknown key, ignored${hint === undefined ? "" : ` (did you mean "${hint}"?)`}`
    if (!warnings.includes(line)) warnings.push(line)
  }
  return warnings
}

import { isJsonObject, type JsonObject } from "../../domain/json.js"

/**
 * A value that matches a JSON Schema, drawn deterministically: the synthetic engine's tool-call
 * arguments and `response_format: json_schema` answers (issue 12). It covers what tool and
 * structured-output schemas use (what zod, Pydantic and the OpenAI SDKs generate): `type` (also as
 * a list), `properties` (every one is filled, required or not), `items`, `enum`, `const`,
 * `anyOf`/`oneOf` (the first option that is not `null`), `allOf` (merged), `$ref` into `$defs` /
 * `definitions`, `minItems`, `minLength`/`maxLength`, `minimum`/`maximum` (also exclusive) and
 * the common string formats. `pattern` is not honoured. Recursion stops at depth 8.
 */

const MAX_DEPTH = 8

export interface ExampleSource {
  /** Floats in [0, 1). */
  readonly next: () => number
  /** Words for strings. */
  readonly words: ReadonlyArray<string>
}

const FORMATS: Readonly<Record<string, string>> = {
  "date-time": "2025-01-01T12:00:00Z",
  date: "2025-01-01",
  time: "12:00:00",
  email: "user@example.com",
  uri: "https://example.com/",
  url: "https://example.com/",
  hostname: "example.com",
  ipv4: "192.0.2.1",
  ipv6: "2001:db8::1",
  uuid: "00000000-0000-4000-8000-000000000000"
}

const resolveRef = (root: JsonObject, ref: string): unknown => {
  if (!ref.startsWith("#")) return {}
  let node: unknown = root
  for (const raw of ref.slice(1).split("/").filter((p) => p.length > 0)) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~")
    node = isJsonObject(node) ? node[key] : undefined
  }
  return node ?? {}
}

const typeOf = (schema: JsonObject): string | undefined => {
  const type = schema["type"]
  if (typeof type === "string") return type
  if (Array.isArray(type)) return (type.find((t) => t !== "null") ?? type[0]) as string | undefined
  if (isJsonObject(schema["properties"])) return "object"
  if (schema["items"] !== undefined) return "array"
  return undefined
}

const numberIn = (schema: JsonObject, src: ExampleSource, integer: boolean): number => {
  const num = (k: string) => (typeof schema[k] === "number" ? (schema[k] as number) : undefined)
  const exMin = num("exclusiveMinimum")
  const exMax = num("exclusiveMaximum")
  const min = num("minimum") ?? (exMin === undefined ? undefined : exMin + (integer ? 1 : 0.01))
  const max = num("maximum") ?? (exMax === undefined ? undefined : exMax - (integer ? 1 : 0.01))
  const low = min ?? (max !== undefined ? max - 100 : 0)
  const high = max ?? low + 100
  const value = low + src.next() * Math.max(0, high - low)
  return integer ? Math.min(Math.ceil(low) + Math.floor(value - low), Math.floor(high)) : Math.round(value * 100) / 100
}

const stringFor = (schema: JsonObject, src: ExampleSource): string => {
  const format = typeof schema["format"] === "string" ? FORMATS[schema["format"]] : undefined
  let text = format ?? Array.from({ length: 1 + Math.floor(src.next() * 3) }, () => src.words[Math.floor(src.next() * src.words.length)] ?? "x").join(" ")
  const minLength = typeof schema["minLength"] === "number" ? schema["minLength"] : 0
  const maxLength = typeof schema["maxLength"] === "number" ? schema["maxLength"] : Number.POSITIVE_INFINITY
  while (text.length < minLength) text += "x"
  return text.length > maxLength ? text.slice(0, maxLength) : text
}

const merged = (root: JsonObject, parts: ReadonlyArray<unknown>): JsonObject => {
  const out: JsonObject = {}
  const properties: JsonObject = {}
  for (const part of parts) {
    const schema = isJsonObject(part) && typeof part["$ref"] === "string" ? resolveRef(root, part["$ref"]) : part
    if (!isJsonObject(schema)) continue
    Object.assign(out, schema)
    if (isJsonObject(schema["properties"])) Object.assign(properties, schema["properties"])
  }
  return Object.keys(properties).length > 0 ? { ...out, properties } : out
}

const exampleAt = (root: JsonObject, schema: unknown, src: ExampleSource, depth: number): unknown => {
  if (!isJsonObject(schema) || depth > MAX_DEPTH) return depth > MAX_DEPTH ? null : stringFor({}, src)
  if (typeof schema["$ref"] === "string") return exampleAt(root, resolveRef(root, schema["$ref"]), src, depth + 1)
  if ("const" in schema) return schema["const"]
  if (Array.isArray(schema["enum"]) && schema["enum"].length > 0) return schema["enum"][Math.floor(src.next() * schema["enum"].length)]
  const options = (Array.isArray(schema["anyOf"]) ? schema["anyOf"] : Array.isArray(schema["oneOf"]) ? schema["oneOf"] : undefined) as
    | ReadonlyArray<unknown>
    | undefined
  if (options !== undefined && options.length > 0) {
    const option = options.find((o) => !(isJsonObject(o) && o["type"] === "null")) ?? options[0]
    return exampleAt(root, option, src, depth + 1)
  }
  if (Array.isArray(schema["allOf"])) return exampleAt(root, merged(root, schema["allOf"]), src, depth + 1)
  switch (typeOf(schema)) {
    case "object": {
      const out: JsonObject = {}
      const properties = isJsonObject(schema["properties"]) ? schema["properties"] : {}
      for (const [name, property] of Object.entries(properties)) out[name] = exampleAt(root, property, src, depth + 1)
      return out
    }
    case "array": {
      const minItems = typeof schema["minItems"] === "number" ? schema["minItems"] : 1
      const maxItems = typeof schema["maxItems"] === "number" ? schema["maxItems"] : Number.POSITIVE_INFINITY
      const count = Math.min(Math.max(1, minItems), maxItems)
      const items = Array.isArray(schema["prefixItems"]) ? schema["prefixItems"] : undefined
      return Array.from({ length: items?.length ?? count }, (_, i) => exampleAt(root, items?.[i] ?? schema["items"], src, depth + 1))
    }
    case "integer":
      return numberIn(schema, src, true)
    case "number":
      return numberIn(schema, src, false)
    case "boolean":
      return src.next() < 0.5
    case "null":
      return null
    default:
      return stringFor(schema, src)
  }
}

/** A value matching `schema` (anything but an object schema gives a string). */
export const exampleFromSchema = (schema: unknown, src: ExampleSource): unknown =>
  exampleAt(isJsonObject(schema) ? schema : {}, schema, src, 0)

import { describe, expect, it } from "@effect/vitest"
import { Schema, SchemaAST } from "effect"
import { execFileSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { ConfigFile } from "../../src/config/schema.js"
import { ErrorTable, InferenceTimeout, TimeoutPhase, toOpenAiError } from "../../src/domain/errors.js"
import { Subjects } from "../../src/domain/subjects.js"

/**
 * docs/contract.md is the project's outside contract, and the code is its reference: these tests
 * hold the two equal where a difference would mislead a tool written against the page — every config
 * key (with its default), every error code, every NATS subject, every metric — and check that no
 * tracked file still points to the documents the contract replaced, which a clone does not have.
 */

const root = fileURLToPath(new URL("../..", import.meta.url))
const contract = readFileSync(join(root, "docs/contract.md"), "utf8")

/** The text of the section whose heading starts with `heading` (e.g. `## 2.`), up to the next heading of its level or above. */
const section = (heading: string): string => {
  const level = heading.split(" ")[0] ?? ""
  const lines = contract.split("\n")
  const start = lines.findIndex((line) => line.startsWith(`${heading} `))
  if (start < 0) throw new Error(`docs/contract.md has no section "${heading}"`)
  const rest = lines.slice(start + 1)
  const end = rest.findIndex((line) => /^#+ /.test(line) && (line.split(" ")[0] ?? "").length <= level.length)
  return (end < 0 ? rest : rest.slice(0, end)).join("\n")
}

/** The cells of a markdown table row (`\|` inside a cell is not a separator). */
const cells = (line: string): ReadonlyArray<string> =>
  line
    .split(/(?<!\\)\|/)
    .slice(1, -1)
    .map((cell) => cell.trim())

/** Table rows of `text` whose first cell is one backticked name, by that name. */
const rowsByName = (text: string): ReadonlyMap<string, ReadonlyArray<string>> => {
  const rows = new Map<string, ReadonlyArray<string>>()
  for (const line of text.split("\n")) {
    if (!line.startsWith("| `")) continue
    const row = cells(line)
    const name = /^`([^`]+)`$/.exec(row[0] ?? "")?.[1]
    if (name !== undefined) rows.set(name, row)
  }
  return rows
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

// ---------------------------------------------------------------------------------------------
// Config keys, read from the schema's AST (encoded side: the YAML spelling)

/** A key of the config file below `cluster:`; `<*>` stands for a worker id or a model name. */
interface ConfigKey {
  readonly segments: ReadonlyArray<string>
  /** Under a mapping of ids or model names: written `<id>`/`<model>` in the document, no default. */
  readonly perEntry: boolean
  /** Not a plain mapping of further keys: it has a value of its own, so a row with its default. */
  readonly valued: boolean
}

const PER_ENTRY = "<*>"

/** Through refinements, transformations and `X | undefined` to the schema that shapes the value. */
const shape = (ast: SchemaAST.AST): SchemaAST.AST => {
  switch (ast._tag) {
    case "Refinement":
    case "Transformation":
      return shape(ast.from)
    case "Suspend":
      return shape(ast.f())
    case "Union": {
      const members = ast.types.filter((t) => t._tag !== "UndefinedKeyword")
      const only = members[0]
      return members.length === 1 && only !== undefined ? shape(only) : ast
    }
    default:
      return ast
  }
}

const isPlainMapping = (ast: SchemaAST.AST): boolean => {
  const s = shape(ast)
  return s._tag === "TypeLiteral" && s.indexSignatures.length === 0
}

const configKeys = (): ReadonlyArray<ConfigKey> => {
  const keys: Array<ConfigKey> = []
  const walk = (ast: SchemaAST.AST, prefix: ReadonlyArray<string>, perEntry: boolean): void => {
    switch (ast._tag) {
      case "Refinement":
      case "Transformation":
        return walk(ast.from, prefix, perEntry)
      case "Suspend":
        return walk(ast.f(), prefix, perEntry)
      case "Union":
        for (const member of ast.types) walk(member, prefix, perEntry)
        return
      case "TupleType":
        // Lists: the keys of their items (none of today's lists holds mappings).
        for (const element of [...ast.elements.map((e) => e.type), ...ast.rest.map((r) => r.type)]) walk(element, prefix, perEntry)
        return
      case "TypeLiteral":
        for (const property of ast.propertySignatures) {
          const segments = [...prefix, String(property.name)]
          keys.push({ segments, perEntry, valued: !isPlainMapping(property.type) })
          walk(property.type, segments, perEntry)
        }
        for (const index of ast.indexSignatures) {
          const segments = [...prefix, PER_ENTRY]
          keys.push({ segments, perEntry: true, valued: !isPlainMapping(index.type) })
          walk(index.type, segments, true)
        }
        return
      default:
        return
    }
  }
  walk(SchemaAST.encodedAST(ConfigFile.ast), [], false)
  // Everything sits under `cluster:`; the document names keys relative to it.
  return keys.filter((k) => k.segments[0] === "cluster" && k.segments.length > 1).map((k) => ({ ...k, segments: k.segments.slice(1) }))
}

const keyName = (key: ConfigKey): string => key.segments.join(".")

/** Matches the key as the document spells it (`<id>`, `<model>`, … for `<*>`), or with `suffix` after it. */
const keyPattern = (key: ConfigKey, suffix = ""): RegExp =>
  new RegExp(`^${key.segments.map((s) => (s === PER_ENTRY ? "<[a-z_]+>" : escapeRegExp(s))).join("\\.")}${suffix}$`)

/**
 * The default of a key as the document writes it: its decoded value, encoded back to YAML's side, as
 * JSON in backticks, or `—` when it has none. Its parent mappings are given as `{}`, so that a key
 * inside a mapping that is null by default (`nats.cluster.name`) shows the default it takes there.
 */
const documentedDefault = (key: ConfigKey): string => {
  const skeleton: Record<string, unknown> = {}
  let cursor = skeleton
  for (const segment of ["cluster", ...key.segments.slice(0, -1)]) {
    const child: Record<string, unknown> = {}
    cursor[segment] = child
    cursor = child
  }
  const encoded: unknown = Schema.encodeSync(ConfigFile)(Schema.decodeUnknownSync(ConfigFile)(skeleton))
  const value = ["cluster", ...key.segments].reduce<unknown>(
    (node, segment) => (typeof node === "object" && node !== null ? (node as Record<string, unknown>)[segment] : undefined),
    encoded
  )
  return value === undefined ? "—" : `\`${JSON.stringify(value)}\``
}

describe("docs/contract.md", () => {
  describe("§2 config file", () => {
    const text = section("## 2.")
    const rows = rowsByName(text)
    const keys = configKeys()

    it("knows the schema's keys (the walk itself finds them)", () => {
      const names = keys.map(keyName)
      expect(names).toContain("controller.api.max_buffered_bytes")
      expect(names).toContain("controller.worker_overrides.<*>.hardware.gpu_memory_gb")
      expect(names).toContain("nats.tls.ca_file")
      expect(names).toContain("nats.cluster.routes")
      expect(names).not.toContain("controller.api.default_max_tokens")
    })

    it("names every key of the config schema", () => {
      // A mapping of further keys may be named only through them (`controller.queue.max_pending`).
      const named = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? "")
      const missing = keys.filter((k) => !named.some((name) => keyPattern(k).test(name) || keyPattern(k, "\\..+").test(name)))
      expect(missing.map(keyName)).toEqual([])
    })

    it("gives every key with a value of its own a row with its default", () => {
      const problems: Array<string> = []
      for (const key of keys.filter((k) => k.valued)) {
        const row = [...rows.entries()].find(([name]) => keyPattern(key).test(name))?.[1]
        if (row === undefined) {
          problems.push(`${keyName(key)}: no row`)
          continue
        }
        const expected = key.perEntry ? "—" : documentedDefault(key)
        if (row[2] !== expected) problems.push(`${keyName(key)}: default ${row[2] ?? "(none)"}, the code's is ${expected}`)
        if ((row[1] ?? "") === "" || (row[3] ?? "") === "") problems.push(`${keyName(key)}: no type or meaning`)
      }
      expect(problems).toEqual([])
    })

    it("documents no key the schema does not have", () => {
      const stale = [...rows.keys()].filter((name) => !keys.some((k) => keyPattern(k).test(name)))
      expect(stale).toEqual([])
    })
  })

  describe("§6.7 errors", () => {
    const text = section("### 6.7")
    const rows = rowsByName(text)

    /** The row of `code` says `status` and `type`. */
    const rowProblem = (code: string, status: number, type: string): string | undefined => {
      const row = rows.get(code)
      if (row === undefined) return `${code}: no row`
      if (!new RegExp(`\\b${status}\\b`).test(row[1] ?? "")) return `${code}: status ${row[1] ?? "(none)"}, the code's is ${status}`
      if (!(row[2] ?? "").includes(`\`${type}\``)) return `${code}: type ${row[2] ?? "(none)"}, the code's is ${type}`
      return undefined
    }

    it("names every code of the error table", () => {
      const missing = Object.values(ErrorTable)
        .map((kind) => kind.code)
        .filter((code) => !text.includes(`\`${code}\``))
      expect(missing).toEqual([])
    })

    it("gives every code a client sees its status and type", () => {
      const problems: Array<string | undefined> = []
      for (const [tag, kind] of Object.entries(ErrorTable)) {
        // These two carry their own code on the wire: the phase's (below) and the worker's.
        if (tag === "InferenceTimeout" || tag === "WorkerFailed") continue
        problems.push(rowProblem(kind.code, kind.status, kind.type))
      }
      for (const phase of TimeoutPhase.literals) {
        const { status, body } = toOpenAiError(new InferenceTimeout({ phase, timeoutMs: 1 }))
        problems.push(rowProblem(body.error.code ?? "", status, body.error.type))
      }
      expect(problems.filter((p) => p !== undefined)).toEqual([])
    })
  })

  describe("§4.2 NATS subjects", () => {
    const rows = rowsByName(section("### 4.2"))
    const SLOT = "\u0000"
    const patterns = Object.entries(Subjects).map(([name, subject]) => {
      const spelled = typeof subject === "string" ? subject : subject(SLOT)
      return { name, pattern: new RegExp(`^${spelled.split(SLOT).map(escapeRegExp).join("\\{[A-Za-z]+\\}")}$`) }
    })

    it("has a row for every subject builder and pattern of src/domain/subjects.ts", () => {
      const missing = patterns.filter(({ pattern }) => ![...rows.keys()].some((name) => pattern.test(name))).map((p) => p.name)
      expect(missing).toEqual([])
    })

    it("lists no subject the code does not use", () => {
      const stale = [...rows.keys()].filter((name) => !patterns.some(({ pattern }) => pattern.test(name)))
      expect(stale).toEqual([])
    })
  })

  describe("§9 metrics", () => {
    const rows = rowsByName(section("## 9."))
    const source = readFileSync(join(root, "src/controller/metrics.ts"), "utf8")
    const names = [...new Set([...source.matchAll(/"(mlx_cluster_[a-z_]+)"/g)].map((m) => m[1] ?? ""))]

    it("has a row for every metric the controller defines, and none more", () => {
      expect(names.length).toBeGreaterThan(10)
      expect(names.filter((name) => !rows.has(name))).toEqual([])
      expect([...rows.keys()].filter((name) => name.startsWith("mlx_cluster_") && !names.includes(name))).toEqual([])
    })
  })

  it("is what every tracked file refers to: none points to the documents it replaced", () => {
    // Spelled in pieces, so that this file does not match itself.
    const needles = [["..", "shared"].join("/"), ["CONTRACT", "§"].join(" "), ["PRD", "§"].join(" "), ["CONTRACT", "md"].join("."), ["PRD", "md"].join(".")]
    const files = execFileSync("git", ["ls-files", "-z"], { cwd: root, encoding: "utf8" })
      .split("\0")
      .filter((file) => file !== "" && !file.startsWith("node_modules/"))
    expect(files).toContain("package.json")
    const hits: Array<string> = []
    for (const file of files) {
      const path = join(root, file)
      if (!existsSync(path)) continue
      const bytes = readFileSync(path)
      // Binary files (images) hold no references.
      if (bytes.subarray(0, 8000).includes(0)) continue
      const text = bytes.toString("utf8")
      for (const needle of needles) if (text.includes(needle)) hits.push(`${file}: ${needle}`)
    }
    expect(hits).toEqual([])
  })
})

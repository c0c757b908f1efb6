/**
 * The parts of a V8 heap snapshot (`.heapsnapshot`, JSON) that the held scenario reads, and how it
 * names a node's kind: shared by the totals per kind (heap-summary.ts) and the owners (heap-owners.ts).
 */

/** A heap snapshot's nodes: flat rows of `node_fields`, names indexing `strings`. */
export interface HeapSnapshot {
  readonly snapshot: { readonly meta: { readonly node_fields: ReadonlyArray<string>; readonly node_types: ReadonlyArray<unknown> } }
  readonly nodes: ReadonlyArray<number>
  readonly strings: ReadonlyArray<string>
}

/** The column of `name` among a snapshot's node or edge `fields`. */
export const fieldIndex = (fields: ReadonlyArray<string>, name: string, what: "node" | "edge"): number => {
  const i = fields.indexOf(name)
  if (i < 0) throw new Error(`not a heap snapshot: no ${what} field "${name}"`)
  return i
}

/** The node types, `meta.node_types[0]`. */
export const nodeTypes = (s: HeapSnapshot): ReadonlyArray<unknown> => {
  const types = s.snapshot.meta.node_types[0]
  if (!Array.isArray(types)) throw new Error("not a heap snapshot: meta.node_types[0] is not the list of node types")
  return types
}

const NAMED_TYPES = new Set(["object", "closure"])

/**
 * A function naming the kind of the node in row `i` of `s`: `type:constructor name` for objects and
 * closures (`object:ServerResponse`), else the V8 node type.
 */
export const kindNamer = (s: HeapSnapshot): ((i: number) => string) => {
  const fields = s.snapshot.meta.node_fields
  const width = fields.length
  const types = nodeTypes(s)
  const iType = fieldIndex(fields, "type", "node")
  const iName = fieldIndex(fields, "name", "node")
  return (i) => {
    const type = String(types[s.nodes[i * width + iType] ?? -1] ?? "unknown")
    return NAMED_TYPES.has(type) ? `${type}:${s.strings[s.nodes[i * width + iName] ?? -1] ?? "?"}` : type
  }
}

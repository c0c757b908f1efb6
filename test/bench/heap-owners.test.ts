import { describe, expect, it } from "vitest"
import { formatOwned, type HeapGraph, nodeIds, OLDER, ownedPerStream, SHARED, UNREACHABLE } from "../../bench/heap-owners.js"

/** A made-up snapshot in V8's layout: nodes and edges are flat rows, names index `strings`. */
const nodeFields = ["type", "name", "id", "self_size", "edge_count"]
const nodeTypes = ["hidden", "array", "string", "object", "code", "closure", "synthetic"]
const edgeFields = ["type", "name_or_index", "to_node"]
const edgeTypes = ["context", "element", "property", "internal", "hidden", "shortcut", "weak"]
const strings = ["", "(root)", "Registry", "FiberRuntime", "ServerResponse", "run", "Object", "Context", "x"]

interface N {
  readonly type: string
  readonly name: number
  readonly size: number
  readonly to: ReadonlyArray<readonly [string, number]>
}

const graph = (nodes: ReadonlyArray<N>): HeapGraph => ({
  snapshot: { meta: { node_fields: nodeFields, node_types: [nodeTypes], edge_fields: edgeFields, edge_types: [edgeTypes] } },
  nodes: nodes.flatMap((n, i) => [nodeTypes.indexOf(n.type), n.name, 100 + i, n.size, n.to.length]),
  edges: nodes.flatMap((n) => n.to.flatMap(([type, to]) => [edgeTypes.indexOf(type), 8, to * nodeFields.length])),
  strings
})

// 0 the root; 1 an old registry; 2 a request's fiber, 3 its HTTP response (new).
const held = graph([
  { type: "synthetic", name: 1, size: 0, to: [["element", 1], ["element", 2], ["element", 3]] },
  { type: "object", name: 2, size: 70, to: [["property", 8]] },
  { type: "object", name: 3, size: 100, to: [["property", 4], ["property", 7]] },
  // The response reaches the context too (shared), the fiber's array only by a shortcut, 9 only weakly.
  { type: "object", name: 4, size: 200, to: [["property", 6], ["property", 7], ["shortcut", 5], ["weak", 9]] },
  { type: "closure", name: 5, size: 10, to: [["context", 5], ["internal", 9]] },
  { type: "array", name: 0, size: 20, to: [] },
  { type: "string", name: 8, size: 30, to: [] },
  { type: "object", name: 7, size: 40, to: [] },
  { type: "object", name: 6, size: 50, to: [] },
  { type: "array", name: 0, size: 5, to: [] },
  // Reached by nothing.
  { type: "string", name: 8, size: 7, to: [] }
])
const base = graph([{ type: "synthetic", name: 1, size: 0, to: [["element", 1]] }, { type: "object", name: 2, size: 70, to: [] }])

const owners = [
  { name: "the request's fiber", kinds: ["object:FiberRuntime"] },
  { name: "node:http", kinds: ["object:ServerResponse", "object:IncomingMessage"] },
  { name: "a relay", kinds: ["object:Relay"] }
]

describe("heap owners: what the streams' objects are held by", () => {
  it("charges each new object to the nearest owner dominating it; shared, older-held and unreachable ones apart", () => {
    const shares = ownedPerStream(nodeIds(base), held, owners, 1)
    expect(shares).toEqual([
      { owner: "node:http", objects: 2, bytes: 230 },
      // the fiber, its closure, the array (a shortcut does not share it), the weakly reached array
      { owner: "the request's fiber", objects: 4, bytes: 135 },
      { owner: OLDER, objects: 1, bytes: 50 },
      { owner: SHARED, objects: 1, bytes: 40 },
      { owner: UNREACHABLE, objects: 1, bytes: 7 }
    ])
  })

  it("per stream, and as the report's table", () => {
    const shares = ownedPerStream(nodeIds(base), held, owners, 2)
    expect(shares[0]).toEqual({ owner: "node:http", objects: 1, bytes: 115 })
    const table = formatOwned(shares)
    expect(table).toContain("| node:http | 1.00 | 115 |")
    expect(table).toContain(`| ${SHARED} | 0.50 | 20 |`)
    expect(table).not.toContain("a relay")
  })

  it("refuses what is not a heap snapshot with edges, and a count of no streams", () => {
    expect(() => ownedPerStream(new Set(), held, owners, 0)).toThrow(/positive/)
    const noEdgeTypes = { ...held, snapshot: { meta: { ...held.snapshot.meta, edge_types: ["x"] } } }
    expect(() => ownedPerStream(new Set(), noEdgeTypes, owners, 1)).toThrow(/edge types/)
    const noTarget = { ...held, snapshot: { meta: { ...held.snapshot.meta, edge_fields: ["type", "name_or_index"] } } }
    expect(() => ownedPerStream(new Set(), noTarget, owners, 1)).toThrow(/to_node/)
  })
})

import { describe, expect, it } from "vitest"
import { formatHeld, formatHeldPair, type HeapSnapshot, perStream, summarise } from "../../bench/heap-summary.js"

/** A made-up snapshot in V8's layout: nodes are flat rows of `fields`, names index `strings`. */
const fields = ["type", "name", "id", "self_size", "edge_count"]
const types = ["hidden", "array", "string", "object", "code", "closure"]
const strings = ["", "ServerResponse", "Relay", "run"]
const row = (type: string, name: number, size: number) => [types.indexOf(type), name, 1, size, 0]
const snap = (rows: ReadonlyArray<ReadonlyArray<number>>): HeapSnapshot => ({
  snapshot: { meta: { node_fields: fields, node_types: [types, "string", "number", "number", "number"] } },
  nodes: rows.flat(),
  strings
})

const base = snap([row("object", 1, 100), row("array", 0, 50), row("closure", 3, 40)])
// Two streams: each a ServerResponse (300), a Relay (100), an array (80) and a closure (60).
const held = snap([
  row("object", 1, 100),
  row("array", 0, 50),
  row("closure", 3, 40),
  ...[1, 2].flatMap(() => [row("object", 1, 300), row("object", 2, 100), row("array", 0, 80), row("closure", 3, 60)])
])

describe("heap summary", () => {
  it("totals a snapshot by kind: constructor names for objects and closures, the V8 type otherwise", () => {
    const s = summarise(base)
    expect(s.bytes).toBe(190)
    expect(s.objects).toBe(3)
    expect(s.kinds.get("object:ServerResponse")).toEqual({ count: 1, bytes: 100 })
    expect(s.kinds.get("array")).toEqual({ count: 1, bytes: 50 })
    expect(s.kinds.get("closure:run")).toEqual({ count: 1, bytes: 40 })
  })

  it("gives what a stream adds, largest kind first", () => {
    const per = perStream(summarise(base), summarise(held), 2)
    expect(per.bytes).toBe(540)
    expect(per.objects).toBe(4)
    expect(per.kinds.map((k) => [k.kind, k.count, k.bytes])).toEqual([
      ["object:ServerResponse", 1, 300],
      ["object:Relay", 1, 100],
      ["array", 1, 80],
      ["closure:run", 1, 60]
    ])
  })

  it("reports the figure per stream and the top kinds", () => {
    const text = formatHeld(summarise(base), summarise(held), perStream(summarise(base), summarise(held), 2), 2)
    expect(text).toContain("**Held per in-flight stream: 0.5 KB** in 4 objects.")
    expect(text).toContain("| object:ServerResponse | 1.00 | 300 |")
    expect(text).toContain("| object:Relay | 1.00 | 100 |")
    expect(text).not.toContain("closure:run")
  })

  it("sets the controller's figure against the bare relay's", () => {
    const controller = {
      base: summarise(base),
      held: summarise(held),
      per: perStream(summarise(base), summarise(held), 2),
      owned: [{ owner: "the request's fiber", objects: 3, bytes: 240 }]
    }
    // The bare relay's two streams: a ServerResponse (300) and an array (60) each.
    const bareHeld = snap([row("object", 1, 100), ...[1, 2].flatMap(() => [row("object", 1, 300), row("array", 0, 60)])])
    const bareBase = snap([row("object", 1, 100)])
    const bare = {
      base: summarise(bareBase),
      held: summarise(bareHeld),
      per: perStream(summarise(bareBase), summarise(bareHeld), 2),
      owned: [{ owner: "node:http", objects: 2, bytes: 360 }]
    }
    const text = formatHeldPair(controller, bare, 2, 1)
    expect(text).toContain("**Held per in-flight stream: 0.5 KB** in 4 objects.")
    expect(text).toContain("**0.4 KB per stream** in 2 objects. The controller holds **1.50×** the bare relay's, 0.2 KB more per stream.")
    // What holds each one's memory, in its own part of the report.
    const [ownPart, barePart] = text.split("The bare relay, measured the same way")
    expect(ownPart).toContain("| the request's fiber | 3.00 | 240 |")
    expect(barePart).toContain("| node:http | 2.00 | 360 |")
    // The bare relay's top kind only.
    expect(text.split("| object:ServerResponse | 1.00 | 300 |")).toHaveLength(3)
    expect(text).not.toContain("| array | 1.00 | 60 |")
  })

  it("refuses what is not a heap snapshot, and a count of no streams", () => {
    expect(() => summarise({ ...base, snapshot: { meta: { node_fields: ["type", "name"], node_types: [types] } } })).toThrow(/self_size/)
    expect(() => summarise({ ...base, snapshot: { meta: { node_fields: fields, node_types: ["x"] } } })).toThrow(/node types/)
    expect(() => perStream(summarise(base), summarise(held), 0)).toThrow(/positive/)
  })
})

/**
 * Who holds a stream's memory: every object the held snapshot has and the idle one has not is
 * charged to its nearest *dominator* of a kind named as an owner (the request's fiber, node:http's
 * response, a NATS subscription…). An object's dominator is the object every path from the GC
 * roots to it goes through, so freeing an owner frees all that is charged to it. Objects with no
 * such owner on their dominator chain are reachable from several places (or only from the roots)
 * and are reported as such. `--scenario held` prints this beside the kinds of object
 * (heap-summary.ts); pure, so it is tested on made-up snapshots.
 *
 * Dominators by Cooper, Harvey and Kennedy's iterative algorithm ("A Simple, Fast Dominance
 * Algorithm", 2001) over the strong edges: weak edges do not keep an object alive, and shortcut
 * edges are V8's summaries of paths that are there anyway.
 */
import { fieldIndex, type HeapSnapshot, kindNamer } from "./heap-snapshot.js"

/** A heap snapshot with its edges. */
export interface HeapGraph extends HeapSnapshot {
  readonly snapshot: {
    readonly meta: {
      readonly node_fields: ReadonlyArray<string>
      readonly node_types: ReadonlyArray<unknown>
      readonly edge_fields: ReadonlyArray<string>
      readonly edge_types: ReadonlyArray<unknown>
    }
  }
  readonly edges: ReadonlyArray<number>
}

/** An owner: a name for the report and the kinds of object (`object:ServerResponse`) that are it. */
export interface Owner {
  readonly name: string
  readonly kinds: ReadonlyArray<string>
}

/** What one owner holds per stream. */
export interface OwnedShare {
  readonly owner: string
  readonly objects: number
  readonly bytes: number
}

/** Objects with no owner on their dominator chain: reachable from several places, or only from the roots. */
export const SHARED = "several holders, or the roots only"
/** New objects held by objects that were there before the streams (a cache, a registry). */
export const OLDER = "objects older than the streams"
/** New objects nothing reaches: garbage the snapshot still had. */
export const UNREACHABLE = "unreachable"

/** The ids of every object in `s`: the idle snapshot's, to tell which objects are new. */
export const nodeIds = (s: HeapSnapshot): ReadonlySet<number> => {
  const fields = s.snapshot.meta.node_fields
  const width = fields.length
  const iId = fieldIndex(fields, "id", "node")
  const ids = new Set<number>()
  for (let j = iId; j < s.nodes.length; j += width) ids.add(s.nodes[j] ?? -1)
  return ids
}

/** Each node's immediate dominator (node 0 is the root and its own), -1 when unreachable. */
const dominators = (g: HeapGraph): Int32Array => {
  const { node_fields: nodeFields, edge_fields: edgeFields, edge_types: edgeTypes } = g.snapshot.meta
  const edgeTypeNames = edgeTypes[0]
  if (!Array.isArray(edgeTypeNames)) throw new Error("not a heap snapshot: meta.edge_types[0] is not the list of edge types")
  const width = nodeFields.length
  const edgeWidth = edgeFields.length
  const count = g.nodes.length / width
  const iEdgeCount = fieldIndex(nodeFields, "edge_count", "node")
  const iEdgeType = fieldIndex(edgeFields, "type", "edge")
  const iTo = fieldIndex(edgeFields, "to_node", "edge")
  const weak = edgeTypeNames.indexOf("weak")
  const shortcut = edgeTypeNames.indexOf("shortcut")
  const strong = (e: number) => {
    const type = g.edges[e + iEdgeType]
    return type !== weak && type !== shortcut
  }
  const target = (e: number) => (g.edges[e + iTo] ?? 0) / width
  // Each node's edges are the next `edge_count` rows after the previous node's.
  const firstEdge = new Uint32Array(count + 1)
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e
    e += (g.nodes[i * width + iEdgeCount] ?? 0) * edgeWidth
  }
  firstEdge[count] = g.edges.length

  // Post-order numbers from an iterative depth-first walk from the root.
  const post = new Int32Array(count).fill(-1)
  const order: Array<number> = []
  const next = new Uint32Array(count)
  const seen = new Uint8Array(count)
  const stack = [0]
  seen[0] = 1
  next[0] = firstEdge[0] ?? 0
  while (stack.length > 0) {
    const v = stack[stack.length - 1] ?? 0
    let descended = false
    while ((next[v] ?? 0) < (firstEdge[v + 1] ?? 0)) {
      const e = next[v] ?? 0
      next[v] = e + edgeWidth
      if (!strong(e)) continue
      const w = target(e)
      if (seen[w] === 1) continue
      seen[w] = 1
      next[w] = firstEdge[w] ?? 0
      stack.push(w)
      descended = true
      break
    }
    if (!descended) {
      stack.pop()
      post[v] = order.length
      order.push(v)
    }
  }

  // Predecessors over strong edges, between reachable nodes.
  const predStart = new Uint32Array(count + 1)
  for (let v = 0; v < count; v++) {
    if (seen[v] !== 1) continue
    for (let e = firstEdge[v] ?? 0; e < (firstEdge[v + 1] ?? 0); e += edgeWidth) {
      if (!strong(e)) continue
      const slot = target(e) + 1
      predStart[slot] = (predStart[slot] ?? 0) + 1
    }
  }
  for (let v = 0; v < count; v++) predStart[v + 1] = (predStart[v + 1] ?? 0) + (predStart[v] ?? 0)
  const preds = new Uint32Array(predStart[count] ?? 0)
  const fill = predStart.slice()
  for (let v = 0; v < count; v++) {
    if (seen[v] !== 1) continue
    for (let e = firstEdge[v] ?? 0; e < (firstEdge[v + 1] ?? 0); e += edgeWidth) {
      if (!strong(e)) continue
      const w = target(e)
      preds[fill[w] ?? 0] = v
      fill[w] = (fill[w] ?? 0) + 1
    }
  }

  const idom = new Int32Array(count).fill(-1)
  idom[0] = 0
  const intersect = (a0: number, b0: number) => {
    let a = a0
    let b = b0
    while (a !== b) {
      while ((post[a] ?? 0) < (post[b] ?? 0)) a = idom[a] ?? 0
      while ((post[b] ?? 0) < (post[a] ?? 0)) b = idom[b] ?? 0
    }
    return a
  }
  for (let changed = true; changed; ) {
    changed = false
    // Reverse post-order, the root (last in post-order) excluded.
    for (let k = order.length - 2; k >= 0; k--) {
      const v = order[k] ?? 0
      let candidate = -1
      for (let p = predStart[v] ?? 0; p < (predStart[v + 1] ?? 0); p++) {
        const u = preds[p] ?? 0
        if (idom[u] === -1) continue
        candidate = candidate === -1 ? u : intersect(u, candidate)
      }
      if (candidate !== -1 && idom[v] !== candidate) {
        idom[v] = candidate
        changed = true
      }
    }
  }
  return idom
}

/**
 * What each owner holds per stream: the objects of `held` whose id `baseIds` lacks, each charged
 * to the nearest owner on its dominator chain (itself included), else to `SHARED`, `OLDER` or
 * `UNREACHABLE`: the shares add up to the per-stream figure of `perStream`.
 * Largest first; owners that hold nothing are left out.
 */
export const ownedPerStream = (baseIds: ReadonlySet<number>, held: HeapGraph, owners: ReadonlyArray<Owner>, streams: number): ReadonlyArray<OwnedShare> => {
  if (streams <= 0) throw new Error("ownedPerStream: streams must be positive")
  const fields = held.snapshot.meta.node_fields
  const width = fields.length
  const iId = fieldIndex(fields, "id", "node")
  const iSize = fieldIndex(fields, "self_size", "node")
  const ownerOfKind = new Map(owners.flatMap((o) => o.kinds.map((k) => [k, o.name] as const)))
  const kindOf = kindNamer(held)
  const isOld = (i: number) => baseIds.has(held.nodes[i * width + iId] ?? -1)
  const idom = dominators(held)
  const totals = new Map<string, { objects: number; bytes: number }>()
  for (let i = 0; i < held.nodes.length / width; i++) {
    if (isOld(i)) continue
    let owner = idom[i] === -1 ? UNREACHABLE : SHARED
    for (let at = i; at !== 0 && owner !== UNREACHABLE; at = idom[at] ?? 0) {
      const named = ownerOfKind.get(kindOf(at))
      if (named !== undefined) {
        owner = named
        break
      }
      if (isOld(at)) {
        owner = OLDER
        break
      }
    }
    const total = totals.get(owner) ?? { objects: 0, bytes: 0 }
    total.objects++
    total.bytes += held.nodes[i * width + iSize] ?? 0
    totals.set(owner, total)
  }
  return [...totals]
    .map(([owner, t]) => ({ owner, objects: t.objects / streams, bytes: t.bytes / streams }))
    .sort((a, b) => b.bytes - a.bytes)
}

/** The report's table of `ownedPerStream`. */
export const formatOwned = (shares: ReadonlyArray<OwnedShare>): string =>
  [
    "| held by (nearest dominator) | objects per stream | bytes per stream |",
    "|---|---:|---:|",
    ...shares.map((s) => `| ${s.owner} | ${s.objects.toFixed(2)} | ${s.bytes.toFixed(0)} |`)
  ].join("\n")

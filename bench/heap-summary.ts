/**
 * Reads a V8 heap snapshot (`.heapsnapshot`, JSON) into totals per kind of object, and compares
 * two of them per stream: what `--scenario held` reports. Pure, so that it is tested on made-up
 * snapshots. A snapshot holds only live objects (V8 collects garbage before it writes one), so
 * the difference between two snapshots is memory really held, not garbage waiting for a GC.
 */
import { formatOwned, type OwnedShare } from "./heap-owners.js"
import { fieldIndex, type HeapSnapshot, kindNamer } from "./heap-snapshot.js"

export type { HeapSnapshot } from "./heap-snapshot.js"

export interface KindTotal {
  readonly count: number
  readonly bytes: number
}

export interface HeapSummary {
  readonly bytes: number
  readonly objects: number
  /** By kind: `type:constructor name` for objects and closures (`object:ServerResponse`), else the V8 node type. */
  readonly kinds: ReadonlyMap<string, KindTotal>
}

export const summarise = (s: HeapSnapshot): HeapSummary => {
  const width = s.snapshot.meta.node_fields.length
  const iSize = fieldIndex(s.snapshot.meta.node_fields, "self_size", "node")
  const kindOf = kindNamer(s)
  const kinds = new Map<string, { count: number; bytes: number }>()
  let bytes = 0
  for (let i = 0; i < s.nodes.length / width; i++) {
    const size = s.nodes[i * width + iSize] ?? 0
    const kind = kindOf(i)
    const total = kinds.get(kind) ?? { count: 0, bytes: 0 }
    total.count++
    total.bytes += size
    kinds.set(kind, total)
    bytes += size
  }
  return { bytes, objects: s.nodes.length / width, kinds }
}

export interface PerStreamKind {
  readonly kind: string
  /** Objects of this kind added per stream (may be fractional: one socket per keep-alive connection…). */
  readonly count: number
  readonly bytes: number
}

export interface PerStream {
  readonly streams: number
  readonly bytes: number
  readonly objects: number
  /** Largest first. */
  readonly kinds: ReadonlyArray<PerStreamKind>
}

/** What `held` has that `base` has not, divided by the `streams` that make the difference. */
export const perStream = (base: HeapSummary, held: HeapSummary, streams: number): PerStream => {
  if (streams <= 0) throw new Error("perStream: streams must be positive")
  const kinds = [...held.kinds].map(([kind, total]): PerStreamKind => {
    const before = base.kinds.get(kind) ?? { count: 0, bytes: 0 }
    return { kind, count: (total.count - before.count) / streams, bytes: (total.bytes - before.bytes) / streams }
  })
  kinds.sort((a, b) => b.bytes - a.bytes)
  return { streams, bytes: (held.bytes - base.bytes) / streams, objects: (held.objects - base.objects) / streams, kinds }
}

const kib = (bytes: number) => (bytes / 1024).toFixed(1)
const mib = (bytes: number) => (bytes / 1048576).toFixed(1)

const kindRows = (per: PerStream, top: number) =>
  per.kinds.slice(0, top).map((k) => `| ${k.kind.replace(/\|/g, "\\|")} | ${k.count.toFixed(2)} | ${k.bytes.toFixed(0)} |`)

const KIND_HEADER = ["| kind (V8 type:constructor) | objects per stream | bytes per stream |", "|---|---:|---:|"]

/** The report's markdown: totals, then the `top` kinds that grew most per stream (`per` = `perStream(base, held, …)`). */
export const formatHeld = (base: HeapSummary, held: HeapSummary, per: PerStream, top = 15): string =>
  [
    `Live heap of the controller: ${mib(base.bytes)} MiB idle, ${mib(held.bytes)} MiB with ${per.streams} streams in flight.`,
    `**Held per in-flight stream: ${kib(per.bytes)} KB** in ${per.objects.toFixed(0)} objects.`,
    "",
    ...KIND_HEADER,
    ...kindRows(per, top)
  ].join("\n")

/** One server's two snapshots, their difference per stream, and what holds it (heap-owners.ts). */
export interface HeldMeasure {
  readonly base: HeapSummary
  readonly held: HeapSummary
  readonly per: PerStream
  readonly owned: ReadonlyArray<OwnedShare>
}

const OWNED_INTRO = "What holds it, each new object charged to the nearest of these on its dominator chain:"

/**
 * The held scenario's report: the controller as `formatHeld` has it and what holds it, then the bare
 * relay's figure measured the same way, their ratio, what holds it, and its own top kinds (`bareTop`).
 */
export const formatHeldPair = (controller: HeldMeasure, bare: HeldMeasure, top = 15, bareTop = 8): string =>
  [
    formatHeld(controller.base, controller.held, controller.per, top),
    "",
    OWNED_INTRO,
    "",
    formatOwned(controller.owned),
    "",
    `The bare relay, measured the same way: ${mib(bare.base.bytes)} MiB idle, ${mib(bare.held.bytes)} MiB with ${bare.per.streams} streams in flight;`,
    `**${kib(bare.per.bytes)} KB per stream** in ${bare.per.objects.toFixed(0)} objects. ` +
      `The controller holds **${(controller.per.bytes / bare.per.bytes).toFixed(2)}×** the bare relay's, ` +
      `${kib(controller.per.bytes - bare.per.bytes)} KB more per stream.`,
    "",
    formatOwned(bare.owned),
    "",
    ...KIND_HEADER,
    ...kindRows(bare.per, bareTop)
  ].join("\n")

import { Cause, HashMap, Inspectable, Layer, Logger, LogLevel } from "effect"
import type { ClusterConfig, LogFormat } from "./config/schema.js"
import { clip } from "./domain/log-text.js"

/**
 * The process's log lines: one event, one line, whatever the message or its annotations hold.
 *
 * - `pretty` (default): `TIME LEVEL message key=value key="quoted value"`: a logfmt-like line that
 *   a person reads and `grep`/`awk` split. Values with anything but `[A-Za-z0-9_.:@+-]` are quoted
 *   and escaped as JSON strings, so a client-chosen model name can neither break the line nor
 *   forge a `key=value`.
 * - `json`: one JSON object per line, `{ time, level, msg, ...annotations, cause? }`, for log shippers.
 *
 * Effect's default logger writes annotations on lines of their own and a cause as a multi-line
 * trace; both would split one event across lines here. Fiber ids and spans are left out: they
 * mean nothing to an operator.
 */

/** Longest string value written; a longer one is cut and ends with `…`. */
const MAX_VALUE_LENGTH = 2_048

const truncate = (s: string): string => clip(s, MAX_VALUE_LENGTH)

const BARE = /^[A-Za-z0-9_.:@+-]+$/

const safeJson = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** Free text a client may choose: always quoted, so that it reads as one value even when it looks like a word. */
const QUOTED_KEYS: ReadonlySet<string> = new Set(["model", "error"])

/** A value as it stands after `key=` on a pretty line. */
export const logfmtValue = (value: unknown, quote = false): string => {
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value)
  if (value === null || value === undefined) return "null"
  const text = typeof value === "string" ? truncate(value) : truncate(safeJson(value))
  return !quote && BARE.test(text) ? text : JSON.stringify(text)
}

/**
 * The order fields are written in: a request line reads as "what, where, how it ended, how long,
 * which one", the same on every line. Other keys follow in alphabetical order.
 */
const FIELD_ORDER = [
  "method",
  "route",
  "model",
  "workerId",
  "status",
  "outcome",
  "code",
  "tokens",
  "ttftMs",
  "durationMs",
  "retries",
  "requestId",
  "wsRequestId",
  "client",
  "error"
]
const rank = new Map(FIELD_ORDER.map((key, i) => [key, i]))

/** Annotations in `FIELD_ORDER` (a `HashMap` iterates in hash order, which would shuffle every line). */
export const orderedAnnotations = (annotations: HashMap.HashMap<string, unknown>): Array<readonly [string, unknown]> =>
  Array.from(annotations).sort(([a], [b]) => {
    const ra = rank.get(a) ?? FIELD_ORDER.length
    const rb = rank.get(b) ?? FIELD_ORDER.length
    return ra !== rb ? ra - rb : a < b ? -1 : a > b ? 1 : 0
  })

/**
 * Fields of one event, passed to the log call next to its message (`Effect.logInfo("request",
 * new LogFields({ ... }))`) and written like annotations, in their own order. For lines on the hot
 * path: `Effect.annotateLogs` builds a persistent map per call (about 10 µs for a dozen fields,
 * even when the level is filtered out); this costs one object.
 */
export class LogFields {
  constructor(readonly fields: Readonly<Record<string, unknown>>) {}
  /** For other loggers (tests, Effect's own): the fields as `key=value`. */
  toString(): string {
    return Object.entries(this.fields)
      .map(([key, value]) => `${key}=${logfmtValue(value, QUOTED_KEYS.has(key))}`)
      .join(" ")
  }
  toJSON(): Readonly<Record<string, unknown>> {
    return this.fields
  }
}

const messageParts = (message: unknown): ReadonlyArray<unknown> => (Array.isArray(message) ? message : [message])

/** The message of a log call as one line of text (Effect passes several arguments as an array), without its `LogFields`. */
export const messageText = (message: unknown): string =>
  messageParts(message)
    .filter((part) => !(part instanceof LogFields))
    .map((part) => (typeof part === "string" ? part : Inspectable.toStringUnknown(part, 0)))
    .join(" ")
    .replace(/\r?\n/g, "\\n")

/** The `LogFields` of a message, then its annotations in `FIELD_ORDER`. */
const eventFields = (input: LineInput): Array<readonly [string, unknown]> => {
  const fields: Array<readonly [string, unknown]> = []
  for (const part of messageParts(input.message)) if (part instanceof LogFields) fields.push(...Object.entries(part.fields))
  if (HashMap.size(input.annotations) > 0) fields.push(...orderedAnnotations(input.annotations))
  return fields
}

const levelNames: Record<LogLevel.LogLevel["_tag"], string> = {
  All: "ALL",
  Trace: "TRACE",
  Debug: "DEBUG",
  Info: "INFO",
  Warning: "WARN",
  Error: "ERROR",
  Fatal: "FATAL",
  None: "NONE"
}

const colours: Partial<Record<LogLevel.LogLevel["_tag"], string>> = {
  Debug: "\x1b[90m",
  Info: "\x1b[32m",
  Warning: "\x1b[33m",
  Error: "\x1b[31m",
  Fatal: "\x1b[41m"
}

export interface LineInput {
  readonly date: Date
  readonly logLevel: LogLevel.LogLevel
  readonly message: unknown
  readonly annotations: HashMap.HashMap<string, unknown>
  readonly cause: Cause.Cause<unknown>
}

const causeText = (cause: Cause.Cause<unknown>): string | undefined =>
  Cause.isEmpty(cause) ? undefined : Cause.pretty(cause, { renderErrorCause: true })

/** A pretty line (without its newline). `colour` paints the level for a terminal. */
export const prettyLine = (input: LineInput, colour = false): string => {
  const name = levelNames[input.logLevel._tag]
  const level = colour && colours[input.logLevel._tag] !== undefined ? `${colours[input.logLevel._tag]}${name}\x1b[0m` : name
  let line = `${input.date.toISOString()} ${level}${" ".repeat(Math.max(1, 6 - name.length))}${messageText(input.message)}`
  for (const [key, value] of eventFields(input)) line += ` ${key}=${logfmtValue(value, QUOTED_KEYS.has(key))}`
  const cause = causeText(input.cause)
  if (cause !== undefined) line += ` cause=${JSON.stringify(truncate(cause))}`
  return line
}

const RESERVED = new Set(["time", "level", "msg", "cause"])

/** A JSON line (without its newline). Annotations become fields; they cannot replace time, level, msg or cause. */
export const jsonLine = (input: LineInput): string => {
  const record: Record<string, unknown> = {
    time: input.date.toISOString(),
    level: levelNames[input.logLevel._tag].toLowerCase(),
    msg: messageText(input.message)
  }
  for (const [key, value] of eventFields(input)) {
    if (!RESERVED.has(key)) record[key] = typeof value === "string" ? truncate(value) : value
  }
  const cause = causeText(input.cause)
  if (cause !== undefined) record["cause"] = truncate(cause)
  return safeJson(record)
}

/** A logger that writes each event as one line to `write` (stdout by default). */
export const makeLogger = (
  format: LogFormat,
  options: { readonly colour?: boolean; readonly write?: (line: string) => void } = {}
): Logger.Logger<unknown, void> => {
  const write = options.write ?? ((line: string) => void process.stdout.write(`${line}\n`))
  const colour = options.colour ?? false
  // Logger.make's options carry every field of a `LineInput`: passed as they are, the format chosen once.
  return format === "json" ? Logger.make((event) => write(jsonLine(event))) : Logger.make((event) => write(prettyLine(event, colour)))
}

const minimumLevels = {
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error
} as const

/** The process's logger and minimum level, as the config says. Colours only on a terminal, and never in JSON. */
export const LoggingLive = (config: Pick<ClusterConfig, "logFormat" | "logLevel">): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(Logger.defaultLogger, makeLogger(config.logFormat, { colour: process.stdout.isTTY === true })),
    Logger.minimumLogLevel(minimumLevels[config.logLevel])
  )

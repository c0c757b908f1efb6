/**
 * Text that comes from outside (worker ids, model names, subjects, request fields) made safe for a
 * log line: control characters escaped so that it cannot start a forged line or drive a terminal,
 * and cut to a bound so that one message cannot write megabytes of log.
 */

/**
 * Characters JSON.stringify leaves as they are but a terminal or a log viewer may act on: DEL and
 * the C1 controls (0x9b is a one-byte CSI), the line and paragraph separators, and the bidi
 * overrides that make a line read differently from what it holds.
 */
const UNSAFE_AFTER_JSON = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

const escapeChar = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`

/** The marker put after a cut string: how many characters were left out. */
const cutMarker = (left: number): string => `…(+${left} chars)`

/**
 * `value` as a JSON string literal (quotes included) for a log line: newlines and every other control
 * character escaped, at most `max` characters of the value kept, then `…(+N chars)` saying how much
 * was cut. `quoteForLog("a\nb")` is `"a\nb"` with a backslash, never a line break.
 */
export const quoteForLog = (value: string, max = 200): string => {
  const kept = value.length > max ? value.slice(0, max) : value
  const quoted = JSON.stringify(kept).replace(UNSAFE_AFTER_JSON, escapeChar)
  return value.length > max ? `${quoted}${cutMarker(value.length - max)}` : quoted
}

/**
 * `value` without quotes, its control characters escaped the same way, cut to `max` characters:
 * for text that is already a sentence (a schema error's description) rather than one value.
 */
export const sanitizeForLog = (value: string, max = 300): string => {
  const kept = value.length > max ? value.slice(0, max) : value
  const escaped = kept.replace(UNSAFE, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : c === "\r" ? "\\r" : escapeChar(c)))
  return value.length > max ? `${escaped}${cutMarker(value.length - max)}` : escaped
}

/** `text` cut to at most `max` characters, the last one `…` when something was left out. */
export const clip = (text: string, max: number): string => (text.length > max ? `${text.slice(0, max - 1)}…` : text)

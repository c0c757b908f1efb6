/**
 * The one place a request target is normalised (issue 9). Everything downstream — the API-key and
 * rate-limit decisions, the inference fast lane, the router — sees the canonical target, so that
 * no spelling of a path (`/V1/...`, `//v1/...`, `/%76%31/...`, `/v1/./x`, `/a/../v1/...`, a
 * trailing `/`, the absolute form `http://host/v1/...`) reaches a handler the decision did not see.
 */

export interface RequestTarget {
  /**
   * The canonical path: unreserved `%xx` decoded (RFC 3986 §6.2.2.2), `.`/`..` segments resolved,
   * empty segments dropped, no trailing `/` (except `/` itself). Other `%xx` stay encoded.
   */
  readonly path: string
  /** The query string without `?`, as sent ("" when none). */
  readonly query: string
  /** `path` fully decoded and lower-cased: what access decisions compare against. */
  readonly key: string
}

const UNRESERVED = /%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])/g

const decodeUnreserved = (segment: string): string =>
  segment.replace(UNRESERVED, (escape) => String.fromCharCode(parseInt(escape.slice(1), 16)))

const fullyDecoded = (path: string): string | undefined => {
  try {
    return decodeURIComponent(path)
  } catch {
    return undefined
  }
}

/** The canonical form of a raw request target, or `undefined` when it is not a usable path (400). */
export const canonicalTarget = (raw: string): RequestTarget | undefined => {
  let target = raw
  // Absolute form (`GET http://host/path`): only the path and query count.
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(target)
  if (scheme !== null) target = target.slice(scheme[0].length) || "/"
  if (!target.startsWith("/")) return undefined
  const hash = target.indexOf("#")
  if (hash >= 0) target = target.slice(0, hash)
  const q = target.indexOf("?")
  const rawPath = q < 0 ? target : target.slice(0, q)
  const query = q < 0 ? "" : target.slice(q + 1)
  const segments: Array<string> = []
  for (const part of rawPath.split("/")) {
    const segment = decodeUnreserved(part)
    if (segment === "" || segment === ".") continue
    if (segment === "..") segments.pop()
    else segments.push(segment)
  }
  const path = `/${segments.join("/")}`
  const decoded = fullyDecoded(path)
  if (decoded === undefined) return undefined
  // A decoded `/` or `.` segment could still change what a path means: decide on the resolved form.
  const resolved: Array<string> = []
  for (const segment of decoded.split("/")) {
    if (segment === "" || segment === ".") continue
    if (segment === "..") resolved.pop()
    else resolved.push(segment)
  }
  return { path, query, key: `/${resolved.join("/")}`.toLowerCase() }
}

/** The target as the router should see it. */
export const targetUrl = (target: RequestTarget): string => (target.query === "" ? target.path : `${target.path}?${target.query}`)

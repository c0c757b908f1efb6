/**
 * `nats.server_url` holds one NATS URL, or several separated by commas: the members of a NATS
 * cluster (issue 14). The client connects to the first it can reach, in the order given — put the
 * server of this machine first — and fails over to the others by itself when that one dies. An
 * embedded server listens on the first URL's host and port.
 */
export const serverUrls = (serverUrl: string): ReadonlyArray<string> => {
  const urls = serverUrl
    .split(",")
    .map((url) => url.trim())
    .filter((url) => url !== "")
  return urls.length === 0 ? [serverUrl] : urls
}

/** The URL an embedded server listens on: the first of the list. */
export const firstServerUrl = (serverUrl: string): string => serverUrls(serverUrl)[0] ?? serverUrl

/** Host and port of a NATS URL (or of each in a list), for log lines that never show credentials. */
export const safeUrl = (url: string): string =>
  serverUrls(url)
    .map((one) => {
      if (one.includes("://")) {
        try {
          const u = new URL(one)
          return `${u.protocol}//${u.host}`
        } catch {
          // Not a URL: shown as below.
        }
      }
      // Without anything before an `@` (it could be a credential).
      return one.slice(one.lastIndexOf("@") + 1)
    })
    .join(",")

/**
 * nats-server configuration text (the `-c FILE` format), for the embedded server's generated
 * config and for scripts/nats-config.ts. Pure: rendering only. Checked against nats-server 2.9.
 */

/** A double-quoted config string: `\` and `"` escaped; `$` stays literal inside quotes. */
export const quote = (value: string): string => `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`

const list = (items: ReadonlyArray<string>): string => `[${items.map(quote).join(", ")}]`

export interface Permissions {
  readonly publish: ReadonlyArray<string>
  readonly subscribe: ReadonlyArray<string>
  /** May publish to the reply subject of a request it received (once per request). */
  readonly allowResponses: boolean
}

export interface ServerUser {
  readonly user: string
  readonly password: string
  /** Omitted: every subject. */
  readonly permissions?: Permissions
}

export type ServerAuth =
  | { readonly _tag: "Users"; readonly users: ReadonlyArray<ServerUser> }
  | { readonly _tag: "Token"; readonly token: string }
  | { readonly _tag: "None" }

/**
 * The server as a member of a NATS cluster (issue 14). nats-server 2.9 checks routes with a user
 * and password only (`Cluster authorization does not support tokens`).
 */
export interface ServerCluster {
  readonly name: string
  /** `HOST:PORT` the server accepts routes on. */
  readonly listen: string
  /** The other members' route URLs, each with the credential they require (`nats-route://USER:PASS@HOST:PORT`). */
  readonly routes: ReadonlyArray<string>
  /** What a member must present to route to this one; omitted: nothing. */
  readonly auth?: { readonly user: string; readonly password: string }
}

export interface ServerConfig {
  /** `HOST:PORT`; omitted when given on the command line. */
  readonly listen?: string
  readonly auth: ServerAuth
  /** Omitted: a lone server. */
  readonly cluster?: ServerCluster
  /** Comment lines written at the top. */
  readonly header?: ReadonlyArray<string>
}

const renderUser = (u: ServerUser): string => {
  const head = `    { user: ${quote(u.user)}, password: ${quote(u.password)}`
  if (u.permissions === undefined) return `${head} }`
  const p = u.permissions
  return [
    `${head}, permissions: {`,
    `        publish: { allow: ${list(p.publish)} }`,
    `        subscribe: { allow: ${list(p.subscribe)} }`,
    ...(p.allowResponses ? ["        allow_responses: true"] : []),
    "    } }"
  ].join("\n")
}

/** The config file's text. */
export const renderServerConfig = (config: ServerConfig): string => {
  const lines: Array<string> = (config.header ?? []).map((line) => `# ${line}`)
  if (config.listen !== undefined) lines.push(`listen: ${quote(config.listen)}`)
  switch (config.auth._tag) {
    case "Users":
      lines.push("authorization {", "  users: [", ...config.auth.users.map(renderUser), "  ]", "}")
      break
    case "Token":
      lines.push("authorization {", `  token: ${quote(config.auth.token)}`, "}")
      break
    case "None":
      break
  }
  const cluster = config.cluster
  if (cluster !== undefined) {
    lines.push("cluster {", `  name: ${quote(cluster.name)}`, `  listen: ${quote(cluster.listen)}`)
    if (cluster.auth !== undefined) {
      lines.push(`  authorization { user: ${quote(cluster.auth.user)}, password: ${quote(cluster.auth.password)} }`)
    }
    lines.push(`  routes: ${list(cluster.routes)}`, "}")
  }
  return `${lines.join("\n")}\n`
}

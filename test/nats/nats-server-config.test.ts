import { describe, expect, it } from "vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Option } from "effect"
import { findNatsServer } from "../../src/nats/nats-server-process.js"
import { quote, renderServerConfig } from "../../src/nats/nats-server-config.js"

/** `nats-server -t -c FILE`: does nats-server itself accept the text? */
const validate = (text: string) => {
  const file = join(mkdtempSync(join(tmpdir(), "nats-conf-")), "server.conf")
  writeFileSync(file, text)
  const result = spawnSync(Option.getOrThrow(findNatsServer()), ["-t", "-c", file], { encoding: "utf8" })
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` }
}

describe("nats-server config text", () => {
  it("quotes strings so that quotes, backslashes and $ stay literal", () => {
    expect(quote('a"b\\c$HOME')).toBe('"a\\"b\\\\c$HOME"')
  })

  it("renders users with permissions that nats-server 2.9 accepts", () => {
    const text = renderServerConfig({
      header: ["generated"],
      listen: "0.0.0.0:4222",
      auth: {
        _tag: "Users",
        users: [
          { user: "controller-a", password: 'p"w' },
          {
            user: "worker-w1",
            password: "x$y",
            permissions: { publish: ["worker.register", "response.>"], subscribe: ["worker.w1.>"], allowResponses: true }
          }
        ]
      }
    })
    expect(text).toContain("allow_responses: true")
    expect(text.startsWith("# generated\n")).toBe(true)
    const checked = validate(text)
    expect(checked.output).toContain("is valid")
    expect(checked.ok).toBe(true)
  })

  it("renders a token, or no authorization at all", () => {
    expect(validate(renderServerConfig({ auth: { _tag: "Token", token: "t" } })).ok).toBe(true)
    expect(renderServerConfig({ auth: { _tag: "None" } })).toBe("\n")
    // The check can fail: a broken file is refused.
    expect(validate("authorization { users: [ { user: ").ok).toBe(false)
  })
})

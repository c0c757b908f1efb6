import { describe, expect, it } from "vitest"
import { quote, renderServerConfig } from "../../src/nats/nats-server-config.js"
import { validateWithNatsServer } from "../support/nats-server.js"

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
    const checked = validateWithNatsServer(text)
    expect(checked.output).toContain("is valid")
    expect(checked.ok).toBe(true)
  })

  it("renders a token, or no authorization at all", () => {
    expect(validateWithNatsServer(renderServerConfig({ auth: { _tag: "Token", token: "t" } })).ok).toBe(true)
    expect(renderServerConfig({ auth: { _tag: "None" } })).toBe("\n")
    // The check can fail: a broken file is refused.
    expect(validateWithNatsServer("authorization { users: [ { user: ").ok).toBe(false)
  })
})

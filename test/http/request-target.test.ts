import { describe, expect, it } from "@effect/vitest"
import { canonicalTarget, targetUrl } from "../../src/http/request-target.js"

const key = (raw: string) => canonicalTarget(raw)?.key

describe("canonicalTarget", () => {
  it("every spelling of a protected path has the same key", () => {
    const variants = [
      "/v1/chat/completions",
      "/V1/Chat/Completions",
      "//v1//chat/completions",
      "/%76%31/chat/completions",
      "/v1/chat/completions/",
      "/v1/./chat/completions",
      "/x/../v1/chat/completions",
      "/%2e%2e/v1/chat/completions",
      "/v1/chat/x/%2E%2E/completions",
      "http://attacker.example/v1/chat/completions",
      "HTTPS://x:1/v1/chat/completions?stream=1#frag",
      "/v1%2Fchat/completions"
    ]
    expect(variants.map(key)).toEqual(variants.map(() => "/v1/chat/completions"))
  })

  it("keeps the query, decodes only unreserved escapes in the path it passes on, and drops the fragment", () => {
    const t = canonicalTarget("//api/cluster/workers/%77orker%2F1/?x=%2F#f")
    expect(t).toEqual({ path: "/api/cluster/workers/worker%2F1", query: "x=%2F", key: "/api/cluster/workers/worker/1" })
    expect(targetUrl(t ?? { path: "", query: "", key: "" })).toBe("/api/cluster/workers/worker%2F1?x=%2F")
    expect(canonicalTarget("/")).toEqual({ path: "/", query: "", key: "/" })
    expect(canonicalTarget("/../..")).toEqual({ path: "/", query: "", key: "/" })
  })

  it("is undefined for targets that are not paths", () => {
    expect(canonicalTarget("*")).toBeUndefined()
    expect(canonicalTarget("example.com:443")).toBeUndefined()
    expect(canonicalTarget("/bad%zzescape")).toBeUndefined()
  })
})

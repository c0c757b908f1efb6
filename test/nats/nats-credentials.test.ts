import { describe, expect, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { chmodSync, existsSync, mkdtempSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type ClusterConfig, defaultClusterConfig } from "../../src/config/schema.js"
import {
  credentialsFilePath,
  effectiveNatsAuth,
  loadOrCreateCredentials,
  withEffectiveNatsAuth
} from "../../src/nats/nats-credentials.js"

const dir = () => mkdtempSync(join(tmpdir(), "nats-credentials-"))

const config = (over: { mode?: ClusterConfig["mode"]; nats?: Partial<ClusterConfig["nats"]>; stateDir?: string } = {}): ClusterConfig => {
  const base = defaultClusterConfig()
  return { ...base, mode: over.mode ?? base.mode, stateDir: over.stateDir ?? dir(), nats: { ...base.nats, ...over.nats } }
}

describe("effective NATS credentials", () => {
  it.effect("the config's own credentials win and nothing is written", () =>
    Effect.gen(function* () {
      const c = config({ nats: { user: "u", pass: Redacted.make("p") } })
      const auth = yield* effectiveNatsAuth(c)
      expect(auth).toMatchObject({ source: "config", user: "u" })
      expect(existsSync(credentialsFilePath(c))).toBe(false)
      expect(yield* withEffectiveNatsAuth(c)).toBe(c)
      expect((yield* effectiveNatsAuth(config({ nats: { token: Redacted.make("t") } }))).source).toBe("config")
      expect((yield* effectiveNatsAuth(config({ nats: { credsFile: "/x.creds" } }))).credsFile).toBe("/x.creds")
    })
  )

  it.effect("an embedding process generates the credential once (0600), then reuses it", () =>
    Effect.gen(function* () {
      const c = config()
      const first = yield* effectiveNatsAuth(c)
      expect(first).toMatchObject({ source: "generated", file: join(c.stateDir, "nats-credentials.json"), user: "mlx-cluster" })
      expect(statSync(credentialsFilePath(c)).mode & 0o777).toBe(0o600)
      const second = yield* effectiveNatsAuth(c)
      expect(second.source).toBe("file")
      expect(second.pass === undefined ? "" : Redacted.value(second.pass)).toBe(first.pass === undefined ? "?" : Redacted.value(first.pass))
      const filled = yield* withEffectiveNatsAuth(c)
      expect(filled.nats.user).toBe("mlx-cluster")
    })
  )

  it.effect("a worker-only process uses the file when it exists, creates nothing otherwise", () =>
    Effect.gen(function* () {
      const stateDir = dir()
      const worker = config({ mode: "worker", stateDir })
      expect(yield* effectiveNatsAuth(worker)).toEqual({ source: "none" })
      expect(existsSync(credentialsFilePath(worker))).toBe(false)
      // An external-NATS controller embeds nothing either.
      expect((yield* effectiveNatsAuth(config({ stateDir, nats: { mode: "external" } }))).source).toBe("none")
      const generated = yield* effectiveNatsAuth(config({ stateDir }))
      const joined = yield* effectiveNatsAuth(worker)
      expect(joined).toMatchObject({ source: "file", user: generated.user })
    })
  )

  it.effect("a copied file named by nats.credentials_file is used, made private if it was not, and must exist", () =>
    Effect.gen(function* () {
      const file = join(dir(), "copied.json")
      writeFileSync(file, JSON.stringify({ user: "mlx-cluster", password: "from-the-controller" }))
      chmodSync(file, 0o644)
      const worker = config({ mode: "worker", nats: { credentialsFile: file } })
      const auth = yield* effectiveNatsAuth(worker)
      expect(auth.pass === undefined ? "" : Redacted.value(auth.pass)).toBe("from-the-controller")
      expect(statSync(file).mode & 0o777).toBe(0o600)
      const missing = yield* Effect.flip(effectiveNatsAuth(config({ mode: "worker", nats: { credentialsFile: join(dir(), "absent.json") } })))
      expect(missing.message).toMatch(/nats.credentials_file .*absent.json: no such file/)
    })
  )

  it.effect("a broken credentials file is a clear error naming the file", () =>
    Effect.gen(function* () {
      const file = join(dir(), "broken.json")
      writeFileSync(file, JSON.stringify({ user: "" }), { mode: 0o600 })
      const error = yield* Effect.flip(loadOrCreateCredentials(file))
      expect(error.message).toContain(file)
      expect(error.message).toContain("delete it")
    })
  )

  it.effect("with nats.server_config the embedded server's own config decides: nothing is generated", () =>
    Effect.gen(function* () {
      const c = config({ nats: { serverConfig: "/etc/nats.conf" } })
      expect((yield* effectiveNatsAuth(c)).source).toBe("none")
      expect(existsSync(credentialsFilePath(c))).toBe(false)
    })
  )
})

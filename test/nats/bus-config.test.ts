import { describe, expect, it } from "vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Option } from "effect"
import { parse } from "yaml"
import { busFiles, busUsers, type BusPlan, controllerConfigText, serverConfigText, workerConfigText } from "../../src/nats/bus-config.js"
import { defaultClusterConfig } from "../../src/config/schema.js"
import { inboxPrefixFor, workerInboxPrefix, workerPermissions } from "../../src/nats/bus-permissions.js"
import { findNatsServer } from "../../src/nats/nats-server-process.js"

const root = join(import.meta.dirname, "..", "..")

const plan: BusPlan = {
  controllers: ["main"],
  workers: ["studio-1", "mini_2"],
  listen: "0.0.0.0:4222",
  url: "nats://controller.local:4222",
  passwords: { "controller-main": "c".repeat(32), "worker-studio-1": "s".repeat(32), "worker-mini_2": "m".repeat(32) }
}

describe("bus permissions", () => {
  it("pin a worker to its own subjects and inbox", () => {
    expect(workerPermissions("w1")).toEqual({
      publish: ["worker.register", "worker.heartbeat", "worker.deregister", "response.>", "controller.*.probe", "worker.w1.probe"],
      subscribe: ["worker.w1.>", "controller.announce", "_INBOX_w1.>"],
      allowResponses: true
    })
    expect(workerInboxPrefix("w1")).toBe("_INBOX_w1")
  })

  it("a worker-only process uses its own inbox; controllers and mode both keep the default", () => {
    const base = defaultClusterConfig()
    expect(inboxPrefixFor({ ...base, mode: "worker", worker: { ...base.worker, id: "studio-1" } })).toBe("_INBOX_studio-1")
    expect(inboxPrefixFor({ ...base, mode: "worker" }, "Mac-Mini.local")).toBe("_INBOX_mac-mini")
    expect(inboxPrefixFor({ ...base, mode: "both" })).toBeUndefined()
    expect(inboxPrefixFor({ ...base, mode: "controller" })).toBeUndefined()
  })
})

describe("bus config files", () => {
  it("a server config nats-server accepts, with one user per node", () => {
    const text = serverConfigText(plan)
    const file = join(mkdtempSync(join(tmpdir(), "bus-config-")), "nats-server.conf")
    writeFileSync(file, text)
    const checked = spawnSync(Option.getOrThrow(findNatsServer()), ["-t", "-c", file], { encoding: "utf8" })
    expect(checked.status).toBe(0)
    expect(text).toContain('listen: "0.0.0.0:4222"')
    expect(text).toContain('subscribe: { allow: ["worker.mini_2.>", "controller.announce", "_INBOX_mini_2.>"] }')
    expect(text.match(/user: "/g)).toHaveLength(3)
    // The controller has no permissions block: everything.
    expect(text).toMatch(/\{ user: "controller-main", password: "c{32}" \}/)
  })

  it("node configs: external NATS with the node's user; workers pinned to their id; controllers accept only the listed workers", () => {
    expect(parse(workerConfigText(plan, "studio-1"))).toEqual({
      cluster: {
        mode: "worker",
        nats: { mode: "external", server_url: plan.url, user: "worker-studio-1", pass: "s".repeat(32) },
        worker: { id: "studio-1" }
      }
    })
    expect(parse(controllerConfigText(plan, "main"))).toEqual({
      cluster: {
        mode: "controller",
        nats: { mode: "external", server_url: plan.url, user: "controller-main", pass: "c".repeat(32) },
        controller: { allowed_workers: ["studio-1", "mini_2"] }
      }
    })
    expect(busFiles(plan).map((f) => f.name)).toEqual([
      "nats-server.conf",
      "controller-main.yaml",
      "worker-studio-1.yaml",
      "worker-mini_2.yaml"
    ])
    expect(busUsers(plan)).toEqual(["controller-main", "worker-studio-1", "worker-mini_2"])
    expect(() => serverConfigText({ ...plan, passwords: {} })).toThrow(/no password for controller-main/)
  })
})

describe("scripts/nats-config.ts", () => {
  const run = (args: ReadonlyArray<string>) =>
    spawnSync(process.execPath, ["--import", "tsx", "scripts/nats-config.ts", ...args], { cwd: root, encoding: "utf8" })

  it("writes private files, and keeps the passwords of users that remain when run again", () => {
    const out = join(mkdtempSync(join(tmpdir(), "nats-config-")), "bus")
    const first = run(["--workers", "a,b", "--out", out, "--url", "nats://h:4222"])
    expect(first.status).toBe(0)
    expect(first.stdout).toContain("3 new password(s), 0 kept")
    expect(statSync(out).mode & 0o777).toBe(0o700)
    for (const name of ["nats-server.conf", "controller-main.yaml", "worker-a.yaml", "worker-b.yaml", "credentials.json"]) {
      expect(statSync(join(out, name)).mode & 0o777).toBe(0o600)
    }
    const before = JSON.parse(readFileSync(join(out, "credentials.json"), "utf8")) as Record<string, string>
    const second = run(["--workers", "a,c", "--out", out])
    expect(second.stdout).toContain("1 new password(s), 2 kept")
    const after = JSON.parse(readFileSync(join(out, "credentials.json"), "utf8")) as Record<string, string>
    expect(after["worker-a"]).toBe(before["worker-a"])
    expect(after["controller-main"]).toBe(before["controller-main"])
    expect(Object.keys(after).sort()).toEqual(["controller-main", "worker-a", "worker-c"])
  }, 30_000)

  it("refuses bad ids with one line and exit 1", () => {
    const bad = run(["--workers", "a.b"])
    expect(bad.status).toBe(1)
    expect(bad.stderr.trim()).toBe('nats-config: --workers: "a.b": a worker id may hold only letters, digits, "-" and "_"')
  }, 30_000)
})

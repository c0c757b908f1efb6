import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import puppeteer, { type Browser } from "puppeteer-core"

const root = join(import.meta.dirname, "..", "..")

/**
 * The Chromium of the browser tests: `scripts/ensure-chromium.sh` finds it (or installs Debian's
 * `chromium`) and prints its path last. The same script runs in `npm test`'s `pretest`.
 */
export const chromiumPath = (): string => {
  const out = execFileSync("bash", [join(root, "scripts", "ensure-chromium.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 10 * 60_000
  })
  const path = out.trim().split("\n").at(-1)
  if (path === undefined || path === "") throw new Error("scripts/ensure-chromium.sh printed no browser path")
  return path
}

export interface TestBrowser {
  readonly browser: Browser
  readonly close: () => Promise<void>
}

/**
 * Headless Chromium with a fresh profile. This machine has no internet: background networking,
 * component updates, sync and QUIC would only fill the log with failed connections.
 */
export const launchBrowser = async (): Promise<TestBrowser> => {
  const userDataDir = mkdtempSync(join(tmpdir(), "chromium-profile-"))
  const browser = await puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    userDataDir,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage"
    ]
  })
  return {
    browser,
    close: async () => {
      await browser.close()
      rmSync(userDataDir, { recursive: true, force: true })
    }
  }
}

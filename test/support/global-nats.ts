import type { TestProject } from "vitest/node"
import { startTestNatsServer } from "./nats-server.js"

/** One real nats-server for the whole run; tests read its URL with `inject("natsUrl")`. */
export default async function setup(project: TestProject) {
  const server = await startTestNatsServer()
  project.provide("natsUrl", server.url)
  return async () => {
    await server.stop()
  }
}

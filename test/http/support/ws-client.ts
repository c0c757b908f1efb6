import { Effect, Schema } from "effect"
import WebSocket from "ws"
import { WsServerFrame, type WsServerMessage } from "../../../src/domain/websocket.js"
import { eventually } from "../../support/eventually.js"

type Reply = Exclude<WsServerMessage, { type: "ping" }>

/** A real `ws` client that records what the server sends, for assertions. */
export interface WsTestClient {
  readonly socket: WebSocket
  /** Every JSON message received, in order (including `ping`s). */
  readonly messages: ReadonlyArray<WsServerMessage>
  /** Protocol-level pings received. */
  readonly pings: () => number
  readonly send: (message: unknown) => Effect.Effect<void>
  /** The messages of request `id` once its `done` or `error` arrived (up to 5 s). */
  readonly finished: (id: string | null) => Effect.Effect<ReadonlyArray<Reply>>
  /** Waits until some message matches. */
  readonly waitFor: (predicate: (m: WsServerMessage) => boolean, what?: string) => Effect.Effect<WsServerMessage>
  readonly close: Effect.Effect<void>
  /** Resolves with the close code once the socket is closed. */
  readonly closed: Effect.Effect<number>
}

const decode = Schema.decodeUnknownSync(WsServerFrame)

const isFinal = (m: WsServerMessage): m is Extract<WsServerMessage, { type: "done" | "error" }> =>
  m.type === "done" || m.type === "error"

export const repliesOf = (messages: ReadonlyArray<WsServerMessage>, id: string | null): ReadonlyArray<Reply> =>
  messages.filter((m): m is Reply => m.type !== "ping" && m.id === id)

/** Opens a WebSocket to `url` (scoped: closed when the test ends). */
export const connectWs = (url: string, headers: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.async<WsTestClient, Error>((resume) => {
      const socket = new WebSocket(url, { headers })
      const messages: Array<WsServerMessage> = []
      let pings = 0
      let closeCode: number | undefined
      socket.on("message", (data, isBinary) => {
        if (!isBinary) messages.push(decode(data.toString()))
      })
      socket.on("ping", () => {
        pings++
      })
      socket.on("close", (code) => {
        closeCode = code
      })
      socket.once("error", (error) => resume(Effect.fail(error)))
      socket.once("unexpected-response", (_req, res) =>
        resume(Effect.fail(new Error(`unexpected response ${res.statusCode}`)))
      )
      socket.once("open", () => {
        const waitFor = (predicate: (m: WsServerMessage) => boolean, what = "a message") =>
          eventually(Effect.sync(() => messages.some(predicate))).pipe(
            Effect.mapError(() => new Error(`timed out waiting for ${what}`)),
            Effect.orDie,
            Effect.map(() => messages.find(predicate) as WsServerMessage)
          )
        resume(
          Effect.succeed({
            socket,
            messages,
            pings: () => pings,
            send: (message) =>
              Effect.sync(() => socket.send(typeof message === "string" ? message : JSON.stringify(message))),
            finished: (id) =>
              waitFor((m) => isFinal(m) && m.id === id, `the end of request ${id}`).pipe(
                Effect.map(() => repliesOf(messages, id))
              ),
            waitFor,
            close: Effect.sync(() => socket.close(1000)),
            closed: eventually(Effect.sync(() => closeCode !== undefined)).pipe(
              Effect.orDie,
              Effect.map(() => closeCode ?? -1)
            )
          })
        )
      })
    }),
    (client) => Effect.sync(() => client.socket.terminate())
  )

/** `ws://` for an `http://` base URL. */
export const wsUrl = (base: string, path = "/ws") => `${base.replace(/^http/, "ws")}${path}`

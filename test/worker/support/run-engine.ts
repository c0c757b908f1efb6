import { Effect, type Either } from "effect"
import type { InferenceRequest, TokenLogprob, ToolCallDelta } from "../../../src/domain/inference.js"
import type { EngineError, Finish, InferenceEngineService } from "../../../src/worker/engines/inference-engine.js"

/** What an engine emitted: every batch as it came (copied), in order. */
export interface TokenRecorder {
  /** The `emit` callback to hand to `generate`. */
  readonly emit: (tokens: ReadonlyArray<string>, logprobs?: ReadonlyArray<TokenLogprob>) => void
  /** The `emitToolCalls` callback to hand to `generate`. */
  readonly emitToolCalls: (deltas: ReadonlyArray<ToolCallDelta>) => void
  readonly batches: ReadonlyArray<ReadonlyArray<string>>
  /** All tokens so far, in order. */
  readonly tokens: () => ReadonlyArray<string>
  /** Every logprob entry emitted, in order. */
  readonly logprobs: () => ReadonlyArray<TokenLogprob>
  /** Every batch of logprobs as it came (undefined where a batch had none). */
  readonly logprobBatches: ReadonlyArray<ReadonlyArray<TokenLogprob> | undefined>
  /** Every tool-call delta emitted, in order. */
  readonly toolCalls: () => ReadonlyArray<ToolCallDelta>
  readonly toolCallBatches: ReadonlyArray<ReadonlyArray<ToolCallDelta>>
}

export const tokenRecorder = (): TokenRecorder => {
  const batches: Array<ReadonlyArray<string>> = []
  const logprobBatches: Array<ReadonlyArray<TokenLogprob> | undefined> = []
  const toolCallBatches: Array<ReadonlyArray<ToolCallDelta>> = []
  return {
    emit: (tokens, logprobs) => {
      batches.push([...tokens])
      logprobBatches.push(logprobs === undefined ? undefined : [...logprobs])
    },
    emitToolCalls: (deltas) => void toolCallBatches.push([...deltas]),
    batches,
    tokens: () => batches.flat(),
    logprobs: () => logprobBatches.flatMap((b) => b ?? []),
    logprobBatches,
    toolCalls: () => toolCallBatches.flat(),
    toolCallBatches
  }
}

export interface EngineRun {
  readonly batches: ReadonlyArray<ReadonlyArray<string>>
  readonly tokens: ReadonlyArray<string>
  readonly logprobs: ReadonlyArray<TokenLogprob>
  readonly toolCalls: ReadonlyArray<ToolCallDelta>
  readonly finish: Finish
}

/** Runs `generate` to its end: the emitted batches, all tokens and the finish; an engine failure fails it. */
export const runEngine = (
  engine: Pick<InferenceEngineService, "generate">,
  request: InferenceRequest,
  modelPath = "/models/x"
): Effect.Effect<EngineRun, EngineError> =>
  Effect.suspend(() => {
    const recorder = tokenRecorder()
    return Effect.map(engine.generate(request, modelPath, recorder.emit, recorder.emitToolCalls), (finish) => ({
      batches: recorder.batches,
      tokens: recorder.tokens(),
      logprobs: recorder.logprobs(),
      toolCalls: recorder.toolCalls(),
      finish
    }))
  })

export interface EngineOutcome {
  readonly batches: ReadonlyArray<ReadonlyArray<string>>
  readonly tokens: ReadonlyArray<string>
  readonly result: Either.Either<Finish, EngineError>
}

/** Like `runEngine`, but a failure is part of the outcome, with the tokens emitted before it. */
export const runEngineEither = (
  engine: Pick<InferenceEngineService, "generate">,
  request: InferenceRequest,
  modelPath = "/models/x"
): Effect.Effect<EngineOutcome> =>
  Effect.suspend(() => {
    const recorder = tokenRecorder()
    return Effect.map(Effect.either(engine.generate(request, modelPath, recorder.emit, recorder.emitToolCalls)), (result) => ({
      batches: recorder.batches,
      tokens: recorder.tokens(),
      result
    }))
  })

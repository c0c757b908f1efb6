import { Effect, type Either } from "effect"
import type { InferenceRequest } from "../../../src/domain/inference.js"
import type { EngineError, Finish, InferenceEngineService } from "../../../src/worker/engines/inference-engine.js"

/** What an engine emitted: every batch as it came (copied), in order. */
export interface TokenRecorder {
  /** The `emit` callback to hand to `generate`. */
  readonly emit: (tokens: ReadonlyArray<string>) => void
  readonly batches: ReadonlyArray<ReadonlyArray<string>>
  /** All tokens so far, in order. */
  readonly tokens: () => ReadonlyArray<string>
}

export const tokenRecorder = (): TokenRecorder => {
  const batches: Array<ReadonlyArray<string>> = []
  return {
    emit: (tokens) => void batches.push([...tokens]),
    batches,
    tokens: () => batches.flat()
  }
}

export interface EngineRun {
  readonly batches: ReadonlyArray<ReadonlyArray<string>>
  readonly tokens: ReadonlyArray<string>
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
    return Effect.map(engine.generate(request, modelPath, recorder.emit), (finish) => ({
      batches: recorder.batches,
      tokens: recorder.tokens(),
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
    return Effect.map(Effect.either(engine.generate(request, modelPath, recorder.emit)), (result) => ({
      batches: recorder.batches,
      tokens: recorder.tokens(),
      result
    }))
  })

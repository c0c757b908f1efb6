import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect } from "effect"

/** A file of exactly `bytes` bytes. */
export const writeBytes = (path: string, bytes: number): void => {
  Fs.mkdirSync(Path.dirname(path), { recursive: true })
  Fs.writeFileSync(path, Buffer.alloc(bytes, 7))
}

export const writeText = (path: string, text: string): void => {
  Fs.mkdirSync(Path.dirname(path), { recursive: true })
  Fs.writeFileSync(path, text)
}

/** A temporary directory removed when the scope closes. */
export const tmpDir = (prefix = "worker-test-") =>
  Effect.acquireRelease(
    Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))),
    (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
  )

export interface ModelFixture {
  readonly root: string
  readonly modelDir: string
  readonly hfCacheDir: string
  /** name → { path, size } of every model the folders hold. */
  readonly expected: Readonly<Record<string, { readonly path: string; readonly size: number }>>
}

const CONFIG = JSON.stringify({ model_type: "llama", hidden_size: 64 })

/**
 * Model folders with known sizes:
 * - `models/mlx-community/Llama-3.2-3B-Instruct-4bit`: config.json + model.safetensors (1000 B) +
 *   tokenizer.json (250 B);
 * - `models/tiny`: config.json + two shards (300 B, 200 B) + a nested `extra/notes.txt` (50 B);
 * - `models/not-a-model` (a README only), `models/config-only` (no weights),
 *   `models/weights-only` (no config), `models/.hidden/secret` (a model, hidden);
 * - `hub/models--org--hf-model`: snapshot `rev-new` (refs/main) of symlinks into blobs
 *   (config 40 B + weights 4096 B), and an older snapshot `rev-old`;
 * - `hub/models--solo`: one snapshot (config + 10 B weights); `hub/datasets--x--y` (ignored).
 */
export const makeModelFixture = (root: string): ModelFixture => {
  const modelDir = Path.join(root, "models")
  const hfCacheDir = Path.join(root, "hub")
  const config = Buffer.byteLength(CONFIG)

  const llama = Path.join(modelDir, "mlx-community", "Llama-3.2-3B-Instruct-4bit")
  writeText(Path.join(llama, "config.json"), CONFIG)
  writeBytes(Path.join(llama, "model.safetensors"), 1000)
  writeBytes(Path.join(llama, "tokenizer.json"), 250)

  const tiny = Path.join(modelDir, "tiny")
  writeText(Path.join(tiny, "config.json"), CONFIG)
  writeBytes(Path.join(tiny, "model-00001-of-00002.safetensors"), 300)
  writeBytes(Path.join(tiny, "model-00002-of-00002.safetensors"), 200)
  writeBytes(Path.join(tiny, "extra", "notes.txt"), 50)

  writeText(Path.join(modelDir, "not-a-model", "README.md"), "hello")
  writeText(Path.join(modelDir, "config-only", "config.json"), CONFIG)
  writeBytes(Path.join(modelDir, "weights-only", "model.safetensors"), 10)
  writeText(Path.join(modelDir, ".hidden", "secret", "config.json"), CONFIG)
  writeBytes(Path.join(modelDir, ".hidden", "secret", "model.safetensors"), 10)

  const repo = Path.join(hfCacheDir, "models--org--hf-model")
  writeText(Path.join(repo, "blobs", "aaa"), "x".repeat(40))
  writeBytes(Path.join(repo, "blobs", "bbb"), 4096)
  writeBytes(Path.join(repo, "blobs", "ccc"), 77)
  const newSnap = Path.join(repo, "snapshots", "rev-new")
  const oldSnap = Path.join(repo, "snapshots", "rev-old")
  Fs.mkdirSync(newSnap, { recursive: true })
  Fs.mkdirSync(oldSnap, { recursive: true })
  Fs.symlinkSync("../../blobs/aaa", Path.join(newSnap, "config.json"))
  Fs.symlinkSync("../../blobs/bbb", Path.join(newSnap, "model.safetensors"))
  Fs.symlinkSync("../../blobs/aaa", Path.join(oldSnap, "config.json"))
  Fs.symlinkSync("../../blobs/ccc", Path.join(oldSnap, "model.safetensors"))
  writeText(Path.join(repo, "refs", "main"), "rev-new\n")
  // make the old snapshot the newer by mtime: refs/main must still win
  const later = new Date(Date.now() + 60_000)
  Fs.utimesSync(oldSnap, later, later)

  const solo = Path.join(hfCacheDir, "models--solo", "snapshots", "only")
  writeText(Path.join(solo, "config.json"), CONFIG)
  writeBytes(Path.join(solo, "weights.safetensors"), 10)
  writeText(Path.join(hfCacheDir, "datasets--x--y", "snapshots", "r", "config.json"), CONFIG)

  return {
    root,
    modelDir,
    hfCacheDir,
    expected: {
      "mlx-community/Llama-3.2-3B-Instruct-4bit": { path: llama, size: config + 1000 + 250 },
      tiny: { path: tiny, size: config + 300 + 200 + 50 },
      "org/hf-model": { path: newSnap, size: 40 + 4096 },
      solo: { path: solo, size: config + 10 }
    }
  }
}

/**
 * One generating row's grammar state. All calls are synchronous, so the sampler can use them inside
 * its per-row loop: `fillMask()` after the penalties, `applyMask(row)`, then temperature/top-k/top-p
 * and the choice, then `accept(id)`.
 */
import type { MatcherHandle, XgrammarInstance } from './xgrammar-binding.js';

export interface RowMatcher {
  /** Computes which tokens may come next (xgrammar's bitmask) into this matcher's own buffer. */
  fillMask(): void;
  /** Sets the logit of every token the last `fillMask` refused to -Infinity. */
  applyMask(logits: Float32Array): void;
  /** Whether the last `fillMask` allowed `token`. */
  allows(token: number): boolean;
  /** Advances the grammar; false (state unchanged) when the grammar refuses the token. */
  accept(token: number): boolean;
  /** The grammar is complete and a stop token was accepted. */
  isTerminated(): boolean;
  /** Frees the WASM matcher and the compiled grammar's reference. Idempotent. */
  release(): void;
}

export class GrammarRowMatcher implements RowMatcher {
  readonly #wasm: XgrammarInstance;
  readonly #handle: MatcherHandle;
  readonly #vocabSize: number;
  readonly #mask: Int32Array;
  readonly #onRelease: () => void;
  #released = false;

  constructor(wasm: XgrammarInstance, handle: MatcherHandle, vocabSize: number, onRelease: () => void) {
    this.#wasm = wasm;
    this.#handle = handle;
    this.#vocabSize = vocabSize;
    this.#mask = new Int32Array(Math.ceil(vocabSize / 32));
    this.#onRelease = onRelease;
  }

  fillMask(): void {
    const vector = this.#handle.GetNextTokenBitmask(this.#vocabSize);
    try {
      // A view into WASM memory: copied before anything else can grow (and move) that memory.
      this.#mask.set(this.#wasm.vecIntToView(vector));
    } finally {
      vector.delete();
    }
  }

  applyMask(logits: Float32Array): void {
    const mask = this.#mask;
    const n = Math.min(logits.length, this.#vocabSize);
    // Where a run of all-clear words began: a run is refused with one fill (a number's state allows a few dozen tokens of 49,152).
    let clearFrom = -1;
    for (let w = 0; w < mask.length; w++) {
      const word = mask[w];
      if (word === 0) {
        if (clearFrom < 0) clearFrom = w * 32;
        continue;
      }
      if (clearFrom >= 0) {
        logits.fill(-Infinity, clearFrom, Math.min(w * 32, n));
        clearFrom = -1;
      }
      if (word === -1) continue;
      // Walk the clear bits only: after the first steps of a JSON grammar most words are all-set or all-clear.
      const base = w * 32;
      for (let refused = ~word; refused !== 0; refused &= refused - 1) {
        const id = base + 31 - Math.clz32(refused & -refused);
        if (id < n) logits[id] = -Infinity;
      }
    }
    if (clearFrom >= 0) logits.fill(-Infinity, clearFrom, n);
  }

  allows(token: number): boolean {
    return token >= 0 && token < this.#vocabSize && ((this.#mask[token >>> 5] >>> (token & 31)) & 1) === 1;
  }

  accept(token: number): boolean {
    return this.#handle.AcceptToken(token, false);
  }

  isTerminated(): boolean {
    return this.#handle.IsTerminated();
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#handle.delete();
    this.#onRelease();
  }
}

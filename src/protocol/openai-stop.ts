/**
 * OpenAI and vLLM leave a matched stop string out of the output; TGI keeps it. The engine stops on
 * the stop string with it in the text (TGI's behaviour), so the OpenAI encoders cut it here.
 *
 * A stream cannot take back what it sent, so text that may be the start of a stop string is held
 * back until the next token settles it (as vLLM does): a stop never shows up in part and then
 * vanishes. Each stop string is followed by a Knuth–Morris–Pratt automaton, so each character costs
 * O(1) amortised whatever the length of the stop strings.
 */
import type { FinishReason } from '../types.js';

/** One stop string and how much of it the text so far ends with. */
class StopAutomaton {
  /** `fallback[i]`: the longest proper prefix of `stop[0..i]` that is also its suffix. */
  readonly #fallback: Uint32Array;
  /** The length of the longest prefix of the stop string the text now ends with. */
  matched = 0;

  constructor(readonly stop: string) {
    this.#fallback = new Uint32Array(stop.length);
    for (let i = 1, k = 0; i < stop.length; i++) {
      while (k > 0 && stop[i] !== stop[k]) k = this.#fallback[k - 1];
      if (stop[i] === stop[k]) k++;
      this.#fallback[i] = k;
    }
  }

  /** Feeds one UTF-16 unit; true when the text now ends with the whole stop string. */
  step(unit: string): boolean {
    let k = this.matched === this.stop.length ? this.#fallback[this.matched - 1] : this.matched;
    while (k > 0 && this.stop[k] !== unit) k = this.#fallback[k - 1];
    if (this.stop[k] === unit) k++;
    this.matched = k;
    return k === this.stop.length;
  }
}

/**
 * Releases streamed text with the stop string left out.
 *
 * @example
 * const trimmer = new StopTrimmer(['\nUser:']);
 * trimmer.push('Sure.\nUs'); // 'Sure.'  ('\nUs' may begin the stop string)
 * trimmer.push('ed it');     // '\nUsed it'
 * trimmer.finish('\nUser: hi', 'stop_sequence'); // ''  (the stop string and what follows it are cut)
 */
export class StopTrimmer {
  readonly #stops: string[];
  readonly #automata: StopAutomaton[];
  /** Received, not yet released: the longest text end that may still grow into a stop string. */
  #held = '';

  /** Empty stop strings are ignored, as the engine ignores them. */
  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((stop) => stop.length > 0);
    this.#automata = this.#stops.map((stop) => new StopAutomaton(stop));
  }

  /** The text of one token that is not the last: what can be sent now. */
  push(text: string): string {
    if (this.#automata.length === 0) return text;
    for (let i = 0; i < text.length; i++) for (const automaton of this.#automata) automaton.step(text[i]);
    const pending = this.#held + text;
    const keep = Math.min(pending.length, Math.max(...this.#automata.map((a) => a.matched)));
    this.#held = pending.slice(pending.length - keep);
    return pending.slice(0, pending.length - keep);
  }

  /**
   * The text of the last token: what is left to send. When the generation stopped on a stop
   * string, that is the text before it; the first stop string to complete wins, as in the engine.
   */
  finish(text: string, reason: FinishReason): string {
    const pending = this.#held + text;
    this.#held = '';
    if (reason !== 'stop_sequence') return pending;
    // A stop string cannot begin before the held text: its beginning would have been held back.
    const automata = this.#stops.map((stop) => new StopAutomaton(stop));
    for (let i = 0; i < pending.length; i++) {
      const found = automata.find((automaton) => automaton.step(pending[i]));
      if (found) return pending.slice(0, i + 1 - found.stop.length);
    }
    return pending;
  }
}

/**
 * The whole generated text without its stop string, for a response that is not streamed.
 *
 * @example
 * trimStop('Paris.\nUser: and', ['\nUser:'], 'stop_sequence'); // 'Paris.'
 */
export function trimStop(text: string, stops: readonly string[], reason: FinishReason): string {
  return new StopTrimmer(stops).finish(text, reason);
}

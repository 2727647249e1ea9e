/**
 * Stop sequences matched on the streamed text. A stop string may span several tokens ("lo W" over
 * "He" + "llo Wo" + "rld") and may end inside a token's text; TGI only catches the stop when the
 * text ends exactly with it (a `stop$` regex), we catch it wherever the new text completes it.
 * EOS and `max_new_tokens` are the scheduler's checks, not this one's.
 */
export class StopSequenceMatcher {
  private readonly stops: readonly string[];
  /** Longest stop − 1: the most of the earlier text an occurrence that includes new text can use. */
  private readonly keep: number;
  private tail = '';

  /**
   * @param stops the request's `stop` strings; empty strings are ignored (they would stop at once).
   * @example
   * const matcher = new StopSequenceMatcher(['lo W']);
   * matcher.push('He');     // null
   * matcher.push('llo Wo'); // 'lo W'
   */
  constructor(stops: readonly string[]) {
    this.stops = stops.filter((stop) => stop.length > 0);
    this.keep = Math.max(0, ...this.stops.map((stop) => stop.length - 1));
  }

  /**
   * Feed the newly streamed text piece. Returns the stop string the text now contains, or null.
   * When several complete at once, the one that ends first in the text wins (it is where a
   * character-by-character generation would have stopped), then the earlier one in `stops`.
   */
  push(text: string): string | null {
    if (this.stops.length === 0 || text.length === 0) return null;
    const window = this.tail + text;
    let found: string | null = null;
    let foundEnd = Infinity;
    for (const stop of this.stops) {
      // The tail is shorter than any stop, so a match here always includes some of the new text.
      const at = window.indexOf(stop);
      if (at >= 0 && at + stop.length < foundEnd) {
        found = stop;
        foundEnd = at + stop.length;
      }
    }
    this.tail = this.keep === 0 ? '' : window.slice(-this.keep);
    return found;
  }
}

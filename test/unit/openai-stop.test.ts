import { describe, expect, it } from 'vitest';
import { StopSequenceMatcher } from '../../src/engine/stopping.js';
import { createRng } from '../../src/engine/prng.js';
import { StopTrimmer, trimStop } from '../../src/protocol/openai-stop.js';

describe('StopTrimmer', () => {
  it('holds back what may begin a stop string and releases it once it cannot', () => {
    const trimmer = new StopTrimmer(['\nUser:']);
    expect(trimmer.push('Sure.\nUs')).toBe('Sure.');
    expect(trimmer.push('ed it')).toBe('\nUsed it');
    expect(trimmer.push('\n')).toBe('');
    expect(trimmer.finish('User: hi', 'stop_sequence')).toBe('');
  });

  it('cuts the stop string and what follows it in the same token', () => {
    expect(trimStop('Paris.\nUser: and', ['\nUser:'], 'stop_sequence')).toBe('Paris.');
    expect(trimStop('abcSTOPdef', ['STOP'], 'stop_sequence')).toBe('abc');
  });

  it('keeps everything when the generation ended for another reason', () => {
    const trimmer = new StopTrimmer(['STOP']);
    expect(trimmer.push('abc ST')).toBe('abc ');
    expect(trimmer.finish('', 'length')).toBe('ST');
    expect(trimStop('a STOP b', ['STOP'], 'eos_token')).toBe('a STOP b');
  });

  it('passes text through without stop strings, and ignores empty ones', () => {
    const trimmer = new StopTrimmer(['']);
    expect(trimmer.push('abc')).toBe('abc');
    expect(trimmer.finish('d', 'stop_sequence')).toBe('d');
  });

  it('finds overlapping prefixes (KMP fallback): "aab" in "aaab"', () => {
    const trimmer = new StopTrimmer(['aab']);
    expect(trimmer.push('xa')).toBe('x');
    expect(trimmer.push('a')).toBe('');
    expect(trimmer.push('a')).toBe('a');
    expect(trimmer.finish('b', 'stop_sequence')).toBe('');
  });

  it('the stop string that completes first wins, then the earlier one in the list', () => {
    expect(trimStop('xxabcd', ['bcd', 'abc'], 'stop_sequence')).toBe('xx');
    expect(trimStop('xxabc', ['abc', 'bc'], 'stop_sequence')).toBe('xx');
    expect(trimStop('xxabc', ['bc', 'abc'], 'stop_sequence')).toBe('xxa');
  });

  it('compares UTF-16 units, so a stop string may end inside a surrogate pair of the text', () => {
    expect(trimStop('hi 😀 there', ['😀'], 'stop_sequence')).toBe('hi ');
    const trimmer = new StopTrimmer(['é!']);
    expect(trimmer.push('café')).toBe('caf');
    expect(trimmer.finish('!', 'stop_sequence')).toBe('');
  });

  it('costs linear time for a long stop string over a long run of its prefix', () => {
    const stop = 'a'.repeat(20_000) + 'b';
    const trimmer = new StopTrimmer([stop]);
    let out = '';
    for (let i = 0; i < 400; i++) out += trimmer.push('a'.repeat(100));
    expect(out.length).toBe(20_000);
    expect(trimmer.finish('b', 'stop_sequence')).toBe('');
  });

  it('never releases what it later cuts, and streams what the whole answer holds (random texts, the engine matcher deciding the stop)', () => {
    const random = createRng(7);
    const alphabet = ['a', 'b', 'ab', ' ', '\n', 'ba', 'é'];
    for (let round = 0; round < 2000; round++) {
      const stops = Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
        Array.from({ length: 1 + Math.floor(random() * 4) }, () => alphabet[Math.floor(random() * alphabet.length)]).join(''),
      );
      const matcher = new StopSequenceMatcher(stops);
      const trimmer = new StopTrimmer(stops);
      let generated = '';
      let streamed = '';
      let reason: 'stop_sequence' | 'length' = 'length';
      const tokens = 1 + Math.floor(random() * 12);
      for (let t = 0; t < tokens; t++) {
        const piece = alphabet[Math.floor(random() * alphabet.length)];
        generated += piece;
        const stopped = matcher.push(piece) !== null;
        if (stopped || t === tokens - 1) {
          reason = stopped ? 'stop_sequence' : 'length';
          streamed += trimmer.finish(piece, reason);
          break;
        }
        streamed += trimmer.push(piece);
      }
      const whole = trimStop(generated, stops, reason);
      expect(streamed).toBe(whole);
      if (reason === 'stop_sequence') {
        // The text before the first stop string to complete, and no stop string inside it.
        expect(stops.some((s) => generated.slice(whole.length).startsWith(s))).toBe(true);
        for (const s of stops) expect(whole.includes(s)).toBe(false);
      } else {
        expect(whole).toBe(generated);
      }
    }
  });
});

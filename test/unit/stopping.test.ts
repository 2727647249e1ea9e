import { describe, expect, it } from 'vitest';
import { StopSequenceMatcher } from '../../src/engine/stopping.js';

const feed = (matcher: StopSequenceMatcher, pieces: string[]): Array<string | null> => pieces.map((p) => matcher.push(p));

describe('StopSequenceMatcher', () => {
  it('finds a stop split across pieces, when the piece that completes it arrives', () => {
    expect(feed(new StopSequenceMatcher(['lo W']), ['He', 'llo Wo', 'rld'])).toEqual([null, 'lo W', null]);
  });

  it('finds a stop spread over three pieces and one inside a single piece', () => {
    expect(feed(new StopSequenceMatcher(['abc']), ['a', 'b', 'c'])).toEqual([null, null, 'abc']);
    expect(feed(new StopSequenceMatcher(['END']), ['the END is near'])).toEqual(['END']);
  });

  it('returns null without stops, and ignores empty stop strings', () => {
    expect(feed(new StopSequenceMatcher([]), ['Hello', ' World'])).toEqual([null, null]);
    expect(feed(new StopSequenceMatcher(['']), ['Hello'])).toEqual([null]);
    expect(new StopSequenceMatcher(['x']).push('')).toBeNull();
  });

  it('with several stops, reports the one that ends first in the text, then the earlier one listed', () => {
    expect(new StopSequenceMatcher(['World', 'lo']).push('Hello World')).toBe('lo');
    expect(new StopSequenceMatcher(['abc', 'b']).push('abc')).toBe('b');
    expect(new StopSequenceMatcher(['bc', 'c']).push('abc')).toBe('bc');
    expect(feed(new StopSequenceMatcher(['\n\n', 'User:']), ['Hi', ' there\n', '\nUser:'])).toEqual([null, null, '\n\n']);
  });

  it('does not report again an occurrence that lies wholly in earlier text', () => {
    expect(feed(new StopSequenceMatcher(['xy']), ['axy', 'z', 'y'])).toEqual(['xy', null, null]);
  });

  it('matches stops containing characters outside the BMP across pieces', () => {
    expect(feed(new StopSequenceMatcher(['🙂!']), ['ok 🙂', '!'])).toEqual([null, '🙂!']);
  });
});

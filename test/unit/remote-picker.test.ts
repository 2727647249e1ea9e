/**
 * The picker and the remote options: least loaded of two random choices with random ties (never the
 * first declared, LiteLLM #39322), and options checked once at startup.
 */
import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/engine/prng.js';
import { resolveRemoteOptions } from '../../src/remote/options.js';
import { loadScore, othersLoad, pickLeastLoaded, type Load } from '../../src/remote/picker.js';

interface Candidate extends Load {
  name: string;
}

const score = (c: Candidate) => loadScore(c);

function counts(candidates: Candidate[], draws: number, seed = 1): Record<string, number> {
  const rng = createRng(seed);
  const tally: Record<string, number> = {};
  for (let i = 0; i < draws; i++) {
    const chosen = pickLeastLoaded(candidates, score, rng)!;
    tally[chosen.name] = (tally[chosen.name] ?? 0) + 1;
  }
  return tally;
}

describe('pickLeastLoaded', () => {
  it('spreads ties evenly, whatever the order of declaration', () => {
    const idle = ['a', 'b', 'c'].map((name) => ({ name, inFlight: 0, capacity: 4, others: 0 }));
    const tally = counts(idle, 3000);
    for (const name of ['a', 'b', 'c']) expect(tally[name] / 3000).toBeGreaterThan(0.3);
  });

  it('never picks the strictly most loaded of three, and prefers the lightest', () => {
    const tally = counts(
      [
        { name: 'light', inFlight: 0, capacity: 4, others: 0 },
        { name: 'mid', inFlight: 2, capacity: 4, others: 0 },
        { name: 'heavy', inFlight: 3, capacity: 4, others: 0 },
      ],
      900,
    );
    expect(tally.heavy).toBeUndefined();
    // The lightest wins every pair it is in: two pairs of three.
    expect(tally.light / 900).toBeGreaterThan(0.6);
  });

  it("weighs in-flight by capacity and adds other clients' requests", () => {
    expect(loadScore({ inFlight: 2, capacity: 8, others: 0 })).toBeLessThan(loadScore({ inFlight: 1, capacity: 2, others: 0 }));
    expect(loadScore({ inFlight: 0, capacity: 4, others: 3 })).toBe(0.75);
    const tally = counts(
      [
        { name: 'shared', inFlight: 0, capacity: 4, others: 5 },
        { name: 'free', inFlight: 1, capacity: 4, others: 0 },
      ],
      100,
    );
    expect(tally).toEqual({ free: 100 });
  });

  it("counts a scraped upstream's requests as others' only beyond ours, which it holds too", () => {
    // Six of ours, two of them still waiting for their prefill: nobody else's.
    expect(othersLoad({ queue: 2, running: 4, ours: 6 })).toBe(0);
    // Ours have not all arrived yet, or have already ended there: never below zero.
    expect(othersLoad({ queue: 0, running: 1, ours: 3 })).toBe(0);
    expect(othersLoad({ queue: 3, running: 8, ours: 6 })).toBe(5);
    // So an upstream busy with only our requests weighs what our count says, whatever its queue.
    const ours = { inFlight: 6, capacity: 8 };
    expect(loadScore({ ...ours, others: othersLoad({ queue: 2, running: 4, ours: 6 }) })).toBe(loadScore({ ...ours, others: 0 }));
  });

  it('takes the only candidate, and none of none', () => {
    const only = { name: 'x', inFlight: 9, capacity: 1, others: 0 };
    expect(pickLeastLoaded([only], score, Math.random)).toBe(only);
    expect(pickLeastLoaded([], score, Math.random)).toBeNull();
  });
});

describe('resolveRemoteOptions', () => {
  it('reads URLs with options in the fragment, and fills the defaults', () => {
    const resolved = resolveRemoteOptions({
      upstreams: ['http://127.0.0.1:8080/', 'http://127.0.0.1:8000#dialect=openai&capacity=32&model=m'],
    });
    expect(resolved.upstreams).toEqual([
      { url: 'http://127.0.0.1:8080', dialect: 'tgi', headers: {}, capacity: null, model: null },
      { url: 'http://127.0.0.1:8000', dialect: 'openai', headers: {}, capacity: 32, model: 'm' },
    ]);
    expect(resolved).toMatchObject({
      probeIntervalMs: 2000,
      loadIntervalMs: 500,
      headersTimeoutMs: 10_000,
      maxAttempts: 2,
      maxBackoffMs: 16_000,
    });
  });

  it('refuses what cannot work, at startup, naming the option', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ upstreams: [] }, /non-empty array/],
      [{ upstreams: ['not a url'] }, /upstreams\[0\].*is not a URL/],
      [{ upstreams: ['ftp://x'] }, /not http/],
      [{ upstreams: [{ url: 'http://x', dialect: 'grpc' }] }, /dialect must be "tgi" or "openai"/],
      [{ upstreams: ['http://x#weight=2'] }, /unknown option "weight"/],
      [{ upstreams: ['http://x', 'http://x/'] }, /listed twice/],
      [{ upstreams: [{ url: 'http://x', capacity: 0 }] }, /capacity.*positive integer/],
      [{ upstreams: ['http://x'], probeIntervalMs: -1 }, /probeIntervalMs/],
      [{ upstreams: ['http://x'], headersTimeoutMs: 0 }, /headersTimeoutMs/],
    ];
    for (const [options, message] of bad) expect(() => resolveRemoteOptions(options as never)).toThrow(message);
  });
});

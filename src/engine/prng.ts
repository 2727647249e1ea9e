/**
 * The seeded random source of one sequence: same seed, same samples, so a reported `seed` replays
 * a generation. xoshiro128** (Blackman & Vigna) is fast with 32-bit integer math, which is what
 * JavaScript does well.
 */

const MASK64 = (1n << 64n) - 1n;

/**
 * SplitMix64, the seeding routine the xoshiro authors recommend: it spreads every bit of the seed
 * (both halves of a 53-bit integer) over the state, and its first output is a bijection of the
 * seed, so two different seeds never share a state. BigInt is slow but runs once per sequence.
 */
function splitMix64(seed: bigint): () => bigint {
  let state = seed & MASK64;
  return () => {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  };
}

/**
 * A generator of floats in [0, 1) with 53 random bits each.
 *
 * @param seed any safe integer (request seeds are 0 … 2^53 − 1).
 * @example
 * const random = createRng(42);
 * random(); // the same first value for every createRng(42)
 */
export function createRng(seed: number): () => number {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  const next64 = splitMix64(BigInt(seed));
  const first = next64();
  const second = next64();
  // Two consecutive SplitMix64 outputs are never both zero, so the state is never all zero.
  let a = Number(first & 0xffffffffn) | 0;
  let b = Number(first >> 32n) | 0;
  let c = Number(second & 0xffffffffn) | 0;
  let d = Number(second >> 32n) | 0;

  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };

  // 27 + 26 bits, as in the reference genrand_res53, so small probabilities are not rounded away.
  return () => ((nextUint32() >>> 5) * 67108864 + (nextUint32() >>> 6)) / 9007199254740992;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * The row arithmetic under the samplers: a fast exp for softmax, a weighted draw, and selection of
 * the largest values or of a probability-mass cut without sorting 49152 logits.
 */

export const F32_MAX = 3.4028234663852886e38;
const BUCKETS = 2048;
/** Up to this many, a sorted list beats a histogram for the k largest. */
export const SHORT_LIST = 64;
const STEPS = new Float64Array(64).map((_, j) => 2 ** (j / 64));
const OCTAVES = new Float64Array(1076).map((_, k) => 2 ** -k);

/** Buffers shared by every sampler: `next` is synchronous, so two calls never use them at once. */
type Scratch = ReturnType<typeof allocate>;
let shared = allocate(0);

function allocate(size: number) {
  const [indices, spare, a, b] = [new Int32Array(size), new Int32Array(size), new Float64Array(size), new Float64Array(size)];
  return { indices, spare, a, b, bucketMass: new Float64Array(BUCKETS), bucketCount: new Int32Array(BUCKETS) };
}

export function scratch(size: number): Scratch {
  if (shared.indices.length < size) shared = allocate(size);
  return shared;
}

/**
 * e^x for x <= 0, 3–4× faster than Math.exp with a relative error under 1e-13: 2^(n/64) from two
 * tables times a degree-4 polynomial of the rest (|r| <= ln2/128). Softmax is the hot loop.
 */
export function expNonPositive(x: number): number {
  const t = x * 92.33248261689366; // 64 / ln 2
  if (!(t > -68800)) return 0; // below 2^-1075, or NaN
  const n = Math.floor(t + 0.5);
  const r = (t - n) * 0.010830424696249145; // ln 2 / 64
  return STEPS[n & 63] * OCTAVES[-(n >> 6)] * (1 + r * (1 + r * (0.5 + r * (0.16666666666666666 + r * 0.041666666666666664))));
}

/** The index of the largest logit; the first of equal maxima, as torch's argmax. */
export function argmax(logits: Float32Array): number {
  let max = -Infinity;
  let best = 0;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > max) {
      max = logits[i];
      best = i;
    }
  }
  return best;
}

/** exp(logit − max) of every token into `out`, with the argmax (see `argmax`). */
export function expInto(logits: Float32Array, out: Float64Array): { max: number; argmax: number; sum: number } {
  const best = argmax(logits);
  const max = logits[best];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = expNonPositive(logits[i] - max);
  return { max, argmax: best, sum };
}

/** Inverse-CDF draw over unnormalised weights; `target` is uniform in [0, sum of weights). */
export function draw(weights: Float64Array, n: number, target: number): number {
  let last = 0;
  for (let i = 0; i < n; i++) {
    if (weights[i] === 0) continue;
    target -= weights[i];
    if (target < 0) return i;
    last = i;
  }
  return last; // rounding left a sliver of `target`: the last token with weight takes it
}

/**
 * The `n` largest finite logits, descending (ties by id), by insertion into a short sorted list:
 * one pass in which nearly every logit fails the first comparison.
 */
export function largest(logits: Float32Array, n: number): { ids: number[]; values: number[] } {
  const ids: number[] = [];
  const values: number[] = [];
  for (let i = 0; n > 0 && i < logits.length; i++) {
    const value = logits[i];
    if (value === -Infinity || (values.length === n && value <= values[n - 1])) continue;
    let at = values.length === n ? n - 1 : values.length;
    for (; at > 0 && values[at - 1] < value; at--) {
      values[at] = values[at - 1];
      ids[at] = ids[at - 1];
    }
    values[at] = value;
    ids[at] = i;
  }
  return { ids, values };
}

/** Tokens with a weight > 0 and >= `floor` into `indices`, in order; the others' logits become -Infinity. */
export function candidates(logits: Float32Array, weights: Float64Array, indices: Int32Array, floor: number): number {
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    if (weights[i] > 0 && weights[i] >= floor) indices[n++] = i;
    else logits[i] = -Infinity;
  }
  return n;
}

/** The end of a head of candidates: its last key, and how many candidates equal to it are inside. */
interface Cut {
  key: number;
  ties: number;
}

/**
 * Cut the shortest head of the candidates `indices[0, n)` — largest `keys` first, ties by id — whose
 * weights (1 each when null) reach `target`; never reached (rounding): all of them. A histogram of the
 * keys finds the bucket where the head ends, and only that bucket's members go to the next round,
 * until few are left to sort: O(n) passes with predictable branches, where TGI sorts the whole row
 * (and a quickselect mispredicts every other comparison). Overwrites `indices`.
 */
export function findCut(s: Scratch, n: number, keys: ArrayLike<number>, weights: Float64Array | null, target: number): Cut {
  const { indices, spare: buckets, bucketMass, bucketCount } = s;
  for (;;) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = 0; j < n; j++) {
      const key = keys[indices[j]];
      if (key < lo) lo = key;
      if (key > hi) hi = key;
    }
    if (n <= SHORT_LIST || !(hi > lo)) return walkSorted(indices, n, keys, weights, target, hi > lo);
    const scale = (BUCKETS - 1) / (hi - lo);
    bucketMass.fill(0);
    bucketCount.fill(0);
    for (let j = 0; j < n; j++) {
      const id = indices[j];
      const b = ((hi - keys[id]) * scale) | 0;
      buckets[j] = b;
      bucketMass[b] += weights ? weights[id] : 1;
      bucketCount[b]++;
    }
    let edge = 0;
    for (; edge < BUCKETS && bucketMass[edge] < target; edge++) target -= bucketMass[edge];
    if (edge === BUCKETS) return { key: lo, ties: Infinity };
    // A range too narrow to split (a denormal width) is sorted instead.
    if (bucketCount[edge] === n) return walkSorted(indices, n, keys, weights, target, true);
    let kept = 0;
    for (let j = 0; j < n; j++) if (buckets[j] === edge) indices[kept++] = indices[j];
    n = kept;
  }
}

/** The base case: sort the candidates (unless all keys are equal: they are in id order already) and walk. */
function walkSorted(
  indices: Int32Array,
  n: number,
  keys: ArrayLike<number>,
  weights: Float64Array | null,
  target: number,
  sort: boolean,
): Cut {
  const order = indices.subarray(0, n);
  if (sort) order.sort((a, b) => keys[b] - keys[a] || a - b);
  let above = 0;
  for (let j = 0; j < n; j++) {
    above += weights ? weights[order[j]] : 1;
    if (above < target) continue;
    const key = keys[order[j]];
    let ties = 1;
    while (ties <= j && keys[order[j - ties]] === key) ties++;
    return { key, ties };
  }
  return { key: n > 0 ? keys[order[n - 1]] : -Infinity, ties: Infinity };
}

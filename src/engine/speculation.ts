/**
 * Prompt-lookup speculation (vLLM's `ngram` speculator, llama.cpp's lookup decoding): text that
 * rewrites or extends its input repeats runs of it, so the tokens that followed an earlier occurrence
 * of the sequence's last few tokens are a cheap guess at its next ones. The loop verifies a guess in
 * one forward pass and keeps what the model itself would have chosen (generation-loop.ts).
 */

/** Shortest and longest suffix n-gram looked up, as vLLM's `prompt_lookup_min`/`prompt_lookup_max`. */
export const MIN_NGRAM = 2;
export const MAX_NGRAM = 4;

/**
 * Up to `k` tokens proposed to follow `prompt` then `output`: those after the earliest occurrence of
 * the longest suffix n-gram (`minN` to `maxN` tokens) that appears earlier, vLLM's rule
 * (`_find_longest_matched_ngram_and_propose_tokens`). Fewer when the occurrence is near the end;
 * none without a match, so a text that repeats nothing costs no verification pass. The two parts are
 * read in place: this runs before every decode step of a lone stream.
 *
 * @example
 * proposeTokens([1, 2, 3, 4], [2, 3], 4); // [4, 2, 3]
 */
export function proposeTokens(
  prompt: readonly number[],
  output: readonly number[],
  k: number,
  minN = MIN_NGRAM,
  maxN = MAX_NGRAM,
): number[] {
  const split = prompt.length;
  const total = split + output.length;
  const at = (i: number) => (i < split ? prompt[i] : output[i - split]);
  if (k <= 0) return [];
  for (let n = Math.min(maxN, total - 1); n >= minN; n--) {
    const suffix = total - n;
    // An occurrence must be followed by at least one token: it starts before the suffix does.
    for (let i = 0; i < suffix; i++) {
      let j = 0;
      while (j < n && at(i + j) === at(suffix + j)) j++;
      if (j !== n) continue;
      const proposal: number[] = [];
      for (let t = i + n; t < Math.min(total, i + n + k); t++) proposal.push(at(t));
      return proposal;
    }
  }
  return [];
}

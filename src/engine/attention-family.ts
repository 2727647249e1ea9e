import type { CacheLayout } from './kv-batch.js';

/**
 * How a decoder graph computes attention and positions, which decides the cache layout under which
 * a row in a batch gives exactly what it gives alone (kv-batch.ts explains the layouts).
 *
 * - `position-ids`: plain ops with a `position_ids` input (Optimum's Llama, Qwen2, Phi, SmolLM, ...).
 * - `mask-positions`: plain ops, no `position_ids`, positions from the mask's running count; a probe
 *   at load shows that re-padding a row changes nothing.
 * - `column-positions`: plain ops, no `position_ids`, positions = column index (optimum's Gemma,
 *   Gemma 2 and Gemma 3 exports); the same probe shows that re-padding changes the logits.
 * - `group-query`: `com.microsoft.GroupQueryAttention` (onnxruntime-genai's builder, every `*-GQA`,
 *   `*-q4f16` and `microsoft/*-onnx` folder): right-padded rows with their own lengths.
 * - `multi-head`: `com.microsoft.MultiHeadAttention`/`Attention` (Xenova's "MHA" exports): their
 *   padding semantics differ between kernels and versions, so rows run one at a time, which is exact.
 */
export type AttentionFamily = 'position-ids' | 'mask-positions' | 'column-positions' | 'group-query' | 'multi-head';

export interface AttentionPlan {
  family: AttentionFamily;
  layout: CacheLayout;
  /** A cap on rows per forward pass that the family imposes. */
  maxRows: number | null;
  /** Passes write new keys into the cache in place (GroupQueryAttention's shared buffer, probed at load). */
  inPlace?: boolean;
}

export const FAMILY_NOTES: Record<AttentionFamily, string> = {
  'position-ids': 'left-padded rows, re-padded on joins; no extra cost',
  'mask-positions': 'left-padded rows, re-padded on joins; no extra cost',
  'column-positions':
    'rows stay at the column they joined at (positions are the column index); a prompt longer than the running batch waits for it to catch up or drain',
  'group-query': 'right-padded rows with their own lengths; a long prompt is prefilled alone, in chunks',
  'multi-head': 'one row per forward pass (MultiHeadAttention padding is not relied on); no batching speed-up',
};

/** The graph's family as a refusal names it; plain graphs without position_ids are told apart by a probe, later. */
export const FAMILY_LABELS: Record<AttentionFamily | 'probe', string> = {
  'group-query': 'GroupQueryAttention graph',
  'multi-head': 'MultiHeadAttention graph',
  'position-ids': 'plain-ops graph with position_ids',
  'mask-positions': 'plain-ops graph, positions from the mask',
  'column-positions': 'plain-ops graph, positions from the column',
  probe: 'plain-ops graph without position_ids',
};

/**
 * Why rows of one forward pass would change each other's results, whatever the cache layout, or
 * null. `DynamicQuantizeLinear` (transformers.js' `q8`/`int8`/`uint8` files, `quantize_dynamic`)
 * picks one int8 scale for the whole `[rows, tokens, hidden]` activation, so a row's tokens depend
 * on what else is in the batch.
 */
export function rowCoupling(opTypes: ReadonlySet<string>): string | null {
  if (opTypes.has('DynamicQuantizeLinear')) {
    return 'dynamic int8 quantization (DynamicQuantizeLinear) scales each pass by all its rows';
  }
  return null;
}

/** `opTypes` are the graph's node types (domain-qualified or not); `inputs` its input names. */
export function attentionFamilyFromGraph(opTypes: ReadonlySet<string>, inputs: readonly string[]): AttentionFamily | 'probe' {
  const has = (op: string) => opTypes.has(op) || opTypes.has(`com.microsoft:${op}`) || opTypes.has(`com.microsoft.${op}`);
  if (has('GroupQueryAttention')) return 'group-query';
  if (has('MultiHeadAttention') || has('Attention') || has('PackedMultiHeadAttention')) return 'multi-head';
  if (inputs.includes('position_ids')) return 'position-ids';
  return 'probe';
}

export function planFor(family: AttentionFamily): AttentionPlan {
  switch (family) {
    case 'group-query':
      return { family, layout: 'right', maxRows: null };
    case 'column-positions':
      return { family, layout: 'anchored', maxRows: null };
    case 'multi-head':
      return { family, layout: 'left', maxRows: 1 };
    default:
      return { family, layout: 'left', maxRows: null };
  }
}

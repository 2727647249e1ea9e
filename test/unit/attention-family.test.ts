import { describe, expect, it } from 'vitest';
import { attentionFamilyFromGraph, planFor, rowCoupling } from '../../src/engine/attention-family.js';

const OPTIMUM = ['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key', 'past_key_values.0.value'];
const GENAI = ['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value'];
const ops = (...names: string[]) => new Set(['MatMul', 'Softmax', ...names]);

describe('attentionFamilyFromGraph', () => {
  it("reads GroupQueryAttention first, with or without position_ids (genai's Qwen3 keeps them for its RotaryEmbedding)", () => {
    expect(attentionFamilyFromGraph(ops('com.microsoft.GroupQueryAttention'), GENAI)).toBe('group-query');
    expect(attentionFamilyFromGraph(ops('com.microsoft.GroupQueryAttention', 'com.microsoft.RotaryEmbedding'), OPTIMUM)).toBe(
      'group-query',
    );
  });

  it('runs the contrib MultiHeadAttention and Attention ops, and ONNX Attention, one row per pass', () => {
    for (const op of [
      'com.microsoft.MultiHeadAttention',
      'com.microsoft.Attention',
      'com.microsoft.PackedMultiHeadAttention',
      'Attention',
    ]) {
      const family = attentionFamilyFromGraph(ops(op), OPTIMUM);
      expect(family).toBe('multi-head');
      expect(planFor(family as 'multi-head')).toEqual({ family: 'multi-head', layout: 'left', maxRows: 1 });
    }
  });

  it('trusts position_ids on plain ops and leaves a graph without them to the load-time probe', () => {
    expect(attentionFamilyFromGraph(ops(), OPTIMUM)).toBe('position-ids');
    expect(attentionFamilyFromGraph(ops(), GENAI)).toBe('probe');
    expect(planFor('column-positions')).toEqual({ family: 'column-positions', layout: 'anchored', maxRows: null });
    expect(planFor('group-query')).toEqual({ family: 'group-query', layout: 'right', maxRows: null });
  });
});

describe('rowCoupling', () => {
  it('names dynamic int8 quantization, and nothing for MatMulNBits q4', () => {
    expect(rowCoupling(ops('DynamicQuantizeLinear', 'MatMulInteger'))).toMatch(/DynamicQuantizeLinear/);
    expect(rowCoupling(ops('com.microsoft.MatMulNBits'))).toBeNull();
  });
});

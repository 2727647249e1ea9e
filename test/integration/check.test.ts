import { describe, expect, it } from 'vitest';
import { checkModel } from '../../src/check.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';

describe('streaming-inference check', () => {
  it('describes a GroupQueryAttention export and finds batched tokens equal to solo ones', async () => {
    const lines: string[] = [];
    const report = await checkModel(
      { model: await ensureFixtureModel('tiny', { attention: 'gqa', weights: 'q4' }), dtype: 'q4' },
      (l) => lines.push(l),
      8,
    );
    const text = lines.join('\n');
    expect(report.ok).toBe(true);
    expect(report.mismatches).toEqual([null, null, null]);
    expect(text).toMatch(/ONNX file  onnx\/model_q4\.onnx \([\d.]+ MiB\): dtype "q4", as asked/);
    expect(text).toMatch(/GroupQueryAttention ×2/);
    expect(text).toMatch(/MatMulNBits ×/);
    expect(text).toMatch(/Attention  group-query → right layout: .*; decode steps write their keys in place$/m);
    expect(text).not.toMatch(/^Rows/m);
    expect(text).toMatch(/KV cache   float32, 512 bytes per token/);
    expect(text).toMatch(/Stops on   token ids \d+/);
    expect(text).toMatch(/Result     batched equals alone/);
  });

  it('names the layout of a graph whose positions are the column index', async () => {
    const lines: string[] = [];
    const report = await checkModel({ model: await ensureFixtureModel('tiny', { positions: 'column' }) }, (l) => lines.push(l), 8);
    expect(report.ok).toBe(true);
    expect(lines.join('\n')).toMatch(/column-positions → anchored layout/);
  });

  it('finds batched tokens equal to solo ones on a GroupQueryAttention graph fed position_ids (rotary outside the op)', async () => {
    const lines: string[] = [];
    const report = await checkModel(
      { model: await ensureFixtureModel('tiny', { attention: 'gqa', positions: 'ids' }) },
      (l) => lines.push(l),
      8,
    );
    const text = lines.join('\n');
    expect(report.mismatches).toEqual([null, null, null]);
    expect(text).toMatch(/^Inputs     input_ids, attention_mask, position_ids, past_key_values/m);
    expect(text).toMatch(/RotaryEmbedding ×4, GroupQueryAttention ×2/);
    expect(text).toMatch(/Attention  group-query → right layout/);
  });

  it('says which file it chose unasked and why a q8 export runs one row per pass', async () => {
    const lines: string[] = [];
    const report = await checkModel({ model: await ensureFixtureModel('tiny', { weights: 'q8' }) }, (l) => lines.push(l), 4);
    const text = lines.join('\n');
    expect(report.ok).toBe(true);
    expect(text).toMatch(/^ONNX file  onnx\/model_quantized\.onnx \([\d.]+ MiB\): dtype "q8", the only one there$/m);
    expect(text).toMatch(
      /^Rows       one per forward pass: dynamic int8 quantization \(DynamicQuantizeLinear\) scales each pass by all its rows$/m,
    );
    expect(text).toMatch(/^Sampling   the model's defaults \(do_sample false\) fill what OpenAI requests leave unset/m);
    expect(text).toMatch(/^Self-test  3 prompts alone, then together with joins \(one row per pass: they take turns\)/m);
  });
});

/**
 * The floor: a bare onnxruntime-node greedy loop, in-process, with no engine around it. It prefills
 * `batch` equal-length prompts together and decodes with argmax, feeding `present.*` back as
 * `past_key_values.*`: the least work any server on this model can do. Equal lengths need no
 * padding, so the same loop is right for GroupQueryAttention graphs (whose rows are right-padded).
 */
import * as ort from 'onnxruntime-node';

export interface FloorResult {
  batch: number;
  tokensPerSecond: number;
  firstTokenMs: number;
}

function argmaxRows(logits: Float32Array, rows: number, seqLen: number, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    const start = ((r + 1) * seqLen - 1) * vocab;
    let best = 0;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) {
      const x = logits[start + v];
      if (x > max) {
        max = x;
        best = v;
      }
    }
    out.push(best);
  }
  return out;
}

export async function floorGreedy(session: ort.InferenceSession, prompt: number[], batch: number, newTokens: number): Promise<FloorResult> {
  const layers = session.inputNames.filter((n) => n.startsWith('past_key_values.')).length / 2;
  const meta = session.inputMetadata.find((m) => m.name === 'past_key_values.0.key') as ort.InferenceSession.TensorValueMetadata;
  const [, kvHeads, , headDim] = meta.shape as number[];
  const started = performance.now();
  let past: Record<string, ort.Tensor> = {};
  for (let i = 0; i < layers; i++) {
    for (const kind of ['key', 'value']) {
      past[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [batch, kvHeads, 0, headDim]);
    }
  }
  let ids = Array.from({ length: batch }, () => prompt).flat();
  let seqLen = prompt.length;
  let length = 0;
  let firstTokenMs = 0;
  for (let step = 0; step < newTokens; step++) {
    const total = length + seqLen;
    const positions = BigInt64Array.from({ length: batch * seqLen }, (_, i) => BigInt(length + (i % seqLen)));
    // GroupQueryAttention graphs take positions from the mask and have no position_ids input.
    const positionIds: Record<string, ort.Tensor> = session.inputNames.includes('position_ids')
      ? { position_ids: new ort.Tensor('int64', positions, [batch, seqLen]) }
      : {};
    const out = await session.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [batch, seqLen]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(batch * total).fill(1n), [batch, total]),
      ...positionIds,
      ...past,
    });
    ids = argmaxRows(out.logits.data as Float32Array, batch, seqLen, out.logits.dims[2]);
    if (step === 0) firstTokenMs = performance.now() - started;
    past = {};
    for (let i = 0; i < layers; i++) {
      past[`past_key_values.${i}.key`] = out[`present.${i}.key`];
      past[`past_key_values.${i}.value`] = out[`present.${i}.value`];
    }
    length = total;
    seqLen = 1;
  }
  const seconds = (performance.now() - started) / 1000;
  return { batch, tokensPerSecond: (batch * newTokens) / seconds, firstTokenMs };
}

/**
 * The fixture's weight formats at the level of one tensor and one node: the numbers the q4 and q8
 * quantizers compute, and that onnxruntime reads them the way the real quantizers' files are read.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { halfBits } from '../../src/fixture/float16.js';
import { DataType, type GraphSpec } from '../../src/fixture/onnx-proto.js';
import { Q4_BLOCK_SIZE, quantizeQ4, quantizeQ8, quantizeWeights } from '../../src/fixture/quantize.js';
import { randomWeights } from '../../src/fixture/random.js';
import { writeOnnxModel } from '../../src/fixture/write-onnx.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fixture-quantize-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `y = x · w` for each named weight `[K, N]`, all reading the same `x` `[1, K]`. */
function matmulGraph(K: number, weights: Record<string, Float32Array>): GraphSpec {
  const names = Object.keys(weights);
  const N = weights[names[0]].length / K;
  return {
    name: 'g',
    nodes: names.map((w) => ({ opType: 'MatMul', inputs: ['x', w], outputs: [`y_${w}`], name: `/${w}/MatMul` })),
    initializers: names.map((w) => ({ name: w, dataType: DataType.FLOAT, dims: [K, N], data: new Uint8Array(weights[w].buffer) })),
    inputs: [{ name: 'x', dataType: DataType.FLOAT, dims: [1, K] }],
    outputs: names.map((w) => ({ name: `y_${w}`, dataType: DataType.FLOAT, dims: [1, N] })),
  };
}

async function run(graph: GraphSpec, x: Float32Array): Promise<Record<string, Float32Array>> {
  const fileName = `m${Math.random().toString(36).slice(2)}.onnx`;
  await writeOnnxModel({ irVersion: 8, opsetVersion: 17, producerName: 'test', graph }, { dir, fileName, externalData: false });
  const session = await ort.InferenceSession.create(join(dir, fileName));
  const out = await session.run({ x: new ort.Tensor('float32', x, [1, x.length]) });
  return Object.fromEntries(Object.entries(out).map(([name, t]) => [name, t.data as Float32Array]));
}

/** Reads the q4 tensors back the way MatMulNBits does: `(q − zero point) · scale`. */
function dequantizeQ4(q: ReturnType<typeof quantizeQ4>, K: number, N: number, blockSize = Q4_BLOCK_SIZE): Float32Array {
  const blocks = Math.ceil(K / blockSize);
  const nibble = (bytes: Uint8Array, index: number) => (bytes[index >> 1] >> ((index & 1) * 4)) & 0xf;
  const out = new Float32Array(K * N);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const value = nibble(q.packed.subarray((n * blocks * blockSize) / 2), k);
      const zeroPoint = nibble(q.zeroPoints.subarray(n * Math.ceil(blocks / 2)), b);
      out[k * N + n] = (value - zeroPoint) * q.scales[n * blocks + b];
    }
  }
  return out;
}

describe('q4 (MatMulNBits, as MatMul4BitsQuantizer writes it)', () => {
  it('quantizes each 32-row block of a column asymmetrically, packed two values per byte', () => {
    const K = 72; // three blocks, the last one padded with zeros
    const w = Float32Array.from({ length: K * 2 }, (_, i) => (i % 2 === 0 ? (i >> 1) / 10 : -(i >> 1) / 10));
    const q = quantizeQ4(w, K, 2);
    expect([q.packed.length, q.scales.length, q.zeroPoints.length]).toEqual([2 * 3 * 16, 2 * 3, 2 * 2]);
    // Column 0 is ≥ 0 (zero point 0), column 1 ≤ 0 (zero point 15); a column's fourth nibble is padding, 8.
    expect([q.zeroPoints[0], q.zeroPoints[1]]).toEqual([0x00, 0x80]);
    expect([q.zeroPoints[2], q.zeroPoints[3]]).toEqual([0xff, 0x8f]);
    // Block 0 of column 0 is 0, 0.1, ..., 3.1: scale 3.1 / 15, the first two values in byte 0.
    expect(q.scales[0]).toBeCloseTo(3.1 / 15, 6);
    expect([q.packed[0] & 0xf, q.packed[0] >> 4, q.packed[15] >> 4]).toEqual([0, 0, 15]);
    const back = dequantizeQ4(q, K, 2);
    for (let i = 0; i < w.length; i++) {
      const scale = q.scales[(i % 2) * 3 + Math.floor((i >> 1) / Q4_BLOCK_SIZE)];
      expect(Math.abs(back[i] - w[i])).toBeLessThanOrEqual(scale / 2 + 1e-6);
    }
  });

  it.each([
    { blockSize: 32, K: 64 },
    { blockSize: 128, K: 256 },
  ])(
    'rewrites MatMul nodes into MatMulNBits (block $blockSize) that onnxruntime computes as the dequantized weights',
    async ({ blockSize, K }) => {
      const N = 48;
      const w = randomWeights(1, 'w', K * N, 1 / 8);
      const graph = quantizeWeights(matmulGraph(K, { w }), 'q4', blockSize);
      expect(graph.nodes).toEqual([
        {
          opType: 'MatMulNBits',
          domain: 'com.microsoft',
          name: '/w/MatMul_Q4',
          inputs: ['x', 'w_Q4', 'w_scales', 'w_zero_points'],
          outputs: ['y_w'],
          attributes: { K, N, accuracy_level: 4, bits: 4, block_size: blockSize },
        },
      ]);
      expect(graph.initializers.map((t) => [t.name, t.dataType, t.dims])).toEqual([
        ['w_Q4', DataType.UINT8, [N, 2, blockSize / 2]],
        ['w_scales', DataType.FLOAT, [N * 2]],
        ['w_zero_points', DataType.UINT8, [N]],
      ]);
      // Integers with a ±127 in each block: accuracy level 4's int8 activations hold them exactly.
      const x = Float32Array.from({ length: K }, (_, k) => (k % blockSize === 0 ? 127 : ((k * 37) % 255) - 127));
      const y = (await run(graph, x)).y_w;
      const dq = dequantizeQ4(quantizeQ4(w, K, N, blockSize), K, N, blockSize);
      for (let n = 0; n < N; n++) {
        let expected = 0;
        for (let k = 0; k < K; k++) expected += x[k] * dq[k * N + n];
        expect(y[n]).toBeCloseTo(expected, 3);
      }
    },
  );
});

describe('q8 (DynamicQuantizeLinear + MatMulInteger, as quantize_dynamic writes it)', () => {
  it('quantizes a weight per tensor to uint8 with a zero point, rounding halves to even', () => {
    const q = quantizeQ8(Float32Array.of(-1, 0, 0.5, 3));
    expect(q.scale).toBeCloseTo(4 / 255, 7);
    expect(q.zeroPoint).toBe(64); // round(63.75)
    expect([...q.values]).toEqual([0, 64, 96, 255]);
  });

  it('quantizes each activation once, and onnxruntime computes what the integer formula says', async () => {
    const K = 64;
    const N = 16;
    const weights = { a: randomWeights(1, 'a', K * N, 1 / 8), b: randomWeights(1, 'b', K * N, 1 / 8) };
    const graph = quantizeWeights(matmulGraph(K, weights), 'q8');
    const integerMatMul = ['MatMulInteger', 'Cast', 'Mul', 'Mul'];
    expect(graph.nodes.map((n) => n.opType)).toEqual(['DynamicQuantizeLinear', ...integerMatMul, ...integerMatMul]);
    expect(graph.nodes[1].inputs).toEqual(['x_quantized', 'a_quantized', 'x_zero_point', 'a_zero_point']);
    expect(graph.initializers.map((t) => [t.name, t.dataType, t.dims])).toEqual([
      ['a_quantized', DataType.UINT8, [K, N]],
      ['a_scale', DataType.FLOAT, []],
      ['a_zero_point', DataType.UINT8, []],
      ['b_quantized', DataType.UINT8, [K, N]],
      ['b_scale', DataType.FLOAT, []],
      ['b_zero_point', DataType.UINT8, []],
    ]);
    const x = randomWeights(2, 'x', K, 1);
    const out = await run(graph, x);
    // DynamicQuantizeLinear: uint8 over [min(x, 0), max(x, 0)].
    const lo = Math.min(0, ...x);
    const xScale = Math.fround((Math.max(0, ...x) - lo) / 255);
    const xZero = Math.round(-lo / xScale);
    const xq = Array.from(x, (v) => Math.min(255, Math.max(0, Math.round(v / xScale) + xZero)));
    for (const [name, w] of Object.entries(weights)) {
      const q = quantizeQ8(w);
      for (let n = 0; n < N; n++) {
        let sum = 0;
        for (let k = 0; k < K; k++) sum += (xq[k] - xZero) * (q.values[k * N + n] - q.zeroPoint);
        expect(out[`y_${name}`][n]).toBeCloseTo(sum * xScale * q.scale, 4);
      }
    }
  });
});

describe('fp16', () => {
  it('rounds to the nearest float16, ties to even, clamping as the float16 converter does', () => {
    expect([1, -2, 0, 0.1, 65504].map(halfBits)).toEqual([0x3c00, 0xc000, 0, 0x2e66, 0x7bff]);
    expect([1 + 2 ** -11, 1 + 3 * 2 ** -11].map(halfBits)).toEqual([0x3c00, 0x3c02]);
    expect([1e6, -1e9, 1e-9, 3 * 2 ** -25].map(halfBits)).toEqual([0x7bff, 0xfbff, 0x0001, 0x0002]);
  });
});

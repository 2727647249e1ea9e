import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOnnxHeader, scanOnnxGraph } from '../../src/engine/onnx-file.js';
import { ModelLoadError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import { DataType } from '../../src/fixture/onnx-proto.js';
import { ProtoWriter, concatChunks } from '../../src/fixture/protobuf.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'si-onnx-file-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// onnx.proto field numbers, written by hand so the reader is checked against the format, not against itself.
const node = (opType: string, domain = '', ...attributes: ProtoWriter[]) => {
  const w = new ProtoWriter().string(1, 'x').string(2, 'y').string(3, `${opType}_node`).string(4, opType);
  for (const attribute of attributes) w.message(5, attribute);
  return domain ? w.string(7, domain) : w;
};
const graphAttribute = (name: string, graph: ProtoWriter) => new ProtoWriter().string(1, name).varint(20, 5).message(6, graph);
const valueInfo = (name: string) => new ProtoWriter().string(1, name);
const tensor = (name: string, payload: Uint8Array) =>
  new ProtoWriter().varint(1, payload.length).varint(2, DataType.FLOAT).string(8, name).bytes(9, payload);

/** A model whose If node holds a GroupQueryAttention in one branch and a Loop with MatMulNBits in the other. */
function modelWithSubgraphs(): Buffer {
  const inner = new ProtoWriter().message(1, node('MatMulNBits', 'com.microsoft')).string(2, 'loop_body');
  const thenBranch = new ProtoWriter().message(1, node('GroupQueryAttention', 'com.microsoft')).string(2, 'then');
  const elseBranch = new ProtoWriter().message(1, node('Loop', '', graphAttribute('body', inner))).string(2, 'else');
  // A Constant's tensor value is an attribute too; the reader must step over it, not into it.
  const constant = new ProtoWriter()
    .string(1, 'value')
    .varint(20, 4)
    .message(5, tensor('c', new Uint8Array(4000)));
  const graph = new ProtoWriter()
    .message(1, node('Constant', '', constant))
    .message(1, node('If', 'ai.onnx', graphAttribute('then_branch', thenBranch), graphAttribute('else_branch', elseBranch)))
    .message(1, node('MatMul'))
    .string(2, 'main')
    .message(5, tensor('w', new Uint8Array(64)))
    .message(11, valueInfo('input_ids'))
    .message(11, valueInfo('w'))
    .message(12, valueInfo('logits'));
  const fn = new ProtoWriter().string(1, 'local_fn').message(7, node('SimplifiedLayerNormalization', 'com.microsoft'));
  return concatChunks(
    new ProtoWriter()
      .varint(1, 3)
      .string(2, 'hand-made')
      .message(7, graph)
      .message(8, new ProtoWriter().string(1, '').varint(2, 17))
      .message(8, new ProtoWriter().string(1, 'com.microsoft').varint(2, 1))
      .message(25, fn)
      .finish(),
  );
}

describe('scanOnnxGraph', () => {
  it('counts operators with their domains inside If and Loop subgraphs and local functions', async () => {
    const file = join(dir, 'subgraphs.onnx');
    await writeFile(file, modelWithSubgraphs());
    const scan = await scanOnnxGraph(file);
    expect(scan.irVersion).toBe(3);
    expect(scan.opsets).toEqual({ '': 17, 'com.microsoft': 1 });
    expect(scan.opTypes).toEqual({
      Constant: 1,
      If: 1,
      Loop: 1,
      MatMul: 1,
      'com.microsoft.GroupQueryAttention': 1,
      'com.microsoft.MatMulNBits': 1,
      'com.microsoft.SimplifiedLayerNormalization': 1,
    });
    // IR 3 lists initializers among the inputs; they are not inputs to feed.
    expect(scan.inputs).toEqual(['input_ids']);
    expect(scan.outputs).toEqual(['logits']);
    expect(scan.externalData).toEqual([]);
  });

  it("reads the fixture's graph: its inputs, outputs and plain operators", async () => {
    const scan = await scanOnnxGraph(join(await ensureFixtureModel('tiny'), 'onnx/model.onnx'));
    expect(scan.inputs.slice(0, 3)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(scan.inputs).toContain('past_key_values.1.value');
    expect(scan.outputs).toContain('present.1.value');
    expect(scan.opTypes.MatMul).toBeGreaterThan(0);
    expect(Object.keys(scan.opTypes).some((op) => op.startsWith('com.microsoft.'))).toBe(false);
  });

  it('names the GroupQueryAttention and MatMulNBits of a genai-style q4 fixture', async () => {
    const scan = await scanOnnxGraph(join(await ensureFixtureModel('tiny', { attention: 'gqa', weights: 'q4' }), 'onnx/model_q4.onnx'));
    expect(scan.opTypes['com.microsoft.GroupQueryAttention']).toBeGreaterThan(0);
    expect(scan.opTypes['com.microsoft.MatMulNBits']).toBeGreaterThan(0);
    expect(scan.inputs).not.toContain('position_ids');
  });

  it('lists the external data file the initializers name', async () => {
    const scan = await scanOnnxGraph(join(await ensureFixtureModel('tiny', { externalData: true }), 'onnx/model.onnx'));
    expect(scan.externalData).toEqual(['model.onnx_data']);
  });

  it('skips 1.5 GB of embedded weights by seeking: a few KB are read', async () => {
    // A sparse file: the initializer's payload is a hole, and the graph's inputs come after it.
    const payload = 1.5 * 1024 ** 3;
    // The raw_data tag and its length are written by hand: ProtoWriter would want the bytes.
    const tensorBytes = Buffer.concat([
      concatChunks(new ProtoWriter().varint(1, 1).varint(2, DataType.FLOAT).string(8, 'embed').finish()),
      Buffer.from([(9 << 3) | 2, ...varint(payload)]),
    ]);
    const tensorLength = tensorBytes.length + payload;
    const nodeBytes = concatChunks(new ProtoWriter().message(1, node('Gather')).finish());
    const tail = concatChunks(new ProtoWriter().message(11, valueInfo('input_ids')).message(12, valueInfo('logits')).finish());
    const graphLength = nodeBytes.length + 1 + varint(tensorLength).length + tensorLength + tail.length;
    const head = Buffer.concat([
      Buffer.from([0x08, 0x08, (7 << 3) | 2, ...varint(graphLength)]),
      nodeBytes,
      Buffer.from([(5 << 3) | 2, ...varint(tensorLength)]),
      tensorBytes,
    ]);
    const file = join(dir, 'big.onnx');
    const handle = await open(file, 'w');
    try {
      await handle.write(head, 0, head.length, 0);
      await handle.write(tail, 0, tail.length, head.length + payload);
    } finally {
      await handle.close();
    }
    const scan = await scanOnnxGraph(file);
    expect(scan).toMatchObject({ irVersion: 8, inputs: ['input_ids'], outputs: ['logits'], opTypes: { Gather: 1 } });
    expect(scan.bytesRead).toBeLessThan(8 * 1024);
  });

  it('refuses a truncated file, naming it', async () => {
    const whole = modelWithSubgraphs();
    const file = join(dir, 'truncated.onnx');
    await writeFile(file, whole.subarray(0, whole.length - 20));
    await expect(scanOnnxGraph(file)).rejects.toThrow(/truncated\.onnx is truncated or not an ONNX model/);
  });
});

function varint(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

describe('checkOnnxHeader', () => {
  it("reads the IR version from the first bytes of the fixture's model", async () => {
    const onnx = join(await ensureFixtureModel('tiny'), 'onnx/model.onnx');
    expect(await checkOnnxHeader(onnx)).toBe((await readFile(onnx))[1]);
  });

  it.each([
    ['JSON', '{"this is": "json"}'],
    ['an empty file', ''],
    ['an absurd IR version', Buffer.from([0x08, 0xff, 0xff, 0x03])],
  ])('refuses %s as no ModelProto', async (_, content) => {
    const file = join(dir, 'not-onnx.onnx');
    await writeFile(file, content);
    const error = await checkOnnxHeader(file).catch((e: unknown) => e);
    expect(ModelLoadError.isInstance(error)).toBe(true);
    expect((error as Error).message).toBe(`${file} is not an ONNX model (no ModelProto header)`);
  });

  it('says a missing file is not found', async () => {
    await expect(checkOnnxHeader(join(dir, 'nowhere.onnx'))).rejects.toThrow(/nowhere\.onnx not found/);
  });
});

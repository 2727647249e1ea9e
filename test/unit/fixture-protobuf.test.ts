import { describe, expect, it } from 'vitest';
import { DataType, encodeModel } from '../../src/fixture/onnx-proto.js';
import { ProtoWriter, concatChunks } from '../../src/fixture/protobuf.js';

const hex = (w: ProtoWriter) => concatChunks(w.finish()).toString('hex');

describe('ProtoWriter', () => {
  it('encodes varints as protobuf does, negatives as ten-byte two’s complement', () => {
    expect(hex(new ProtoWriter().varint(1, 150))).toBe('089601');
    expect(hex(new ProtoWriter().varint(2, 300))).toBe('10ac02');
    expect(hex(new ProtoWriter().varint(3, -1))).toBe('18ffffffffffffffffff01');
  });

  it('prefixes strings and nested messages with their length', () => {
    expect(hex(new ProtoWriter().string(2, 'testing'))).toBe('120774657374696e67');
    const inner = new ProtoWriter().varint(1, 150);
    expect(hex(new ProtoWriter().message(3, inner))).toBe('1a03089601');
  });

  it('keeps lazy bytes lazy until written, with their length counted up front', () => {
    let produced = 0;
    const lazy = { length: 3, produce: () => (produced++, Uint8Array.of(7, 8, 9)) };
    const outer = new ProtoWriter().message(5, new ProtoWriter().lazyBytes(9, lazy));
    expect(outer.size()).toBe(7);
    expect(produced).toBe(0);
    expect(hex(outer)).toBe('2a054a03070809');
    expect(produced).toBe(1);
  });
});

describe('encodeModel', () => {
  it('writes ir_version, producer, graph and the default-domain opset', () => {
    const graph = {
      name: 'g',
      nodes: [{ opType: 'Identity', inputs: ['x'], outputs: ['y'], name: 'n' }],
      initializers: [],
      inputs: [{ name: 'x', dataType: DataType.FLOAT, dims: ['batch_size', 2] }],
      outputs: [{ name: 'y', dataType: DataType.FLOAT, dims: ['batch_size', 2] }],
    };
    const bytes = concatChunks(encodeModel({ irVersion: 8, opsetVersion: 17, producerName: 'p', graph }));
    expect(bytes.subarray(0, 5).toString('hex')).toBe('0808120170'); // ir_version 8, producer_name "p"
    expect(bytes.subarray(-6).toString('hex')).toBe('42040a001011'); // opset_import { domain: '', version: 17 }
    expect(bytes.includes(Buffer.from('batch_size'))).toBe(true);
  });

  it('writes float attributes, node domains and an opset import for each contrib domain', () => {
    const node = { opType: 'Op', inputs: ['x'], outputs: ['y'], name: 'n', attributes: { eps: { float: 0.5 } }, domain: 'com.microsoft' };
    const graph = { name: 'g', nodes: [node], initializers: [], inputs: [], outputs: [] };
    const bytes = concatChunks(encodeModel({ irVersion: 8, opsetVersion: 17, producerName: 'p', graph }));
    // AttributeProto { name: "eps", type: FLOAT, f: 0.5 (fixed32, little-endian) }
    expect(bytes.includes(Buffer.from('0a03657073a00101150000003f', 'hex'))).toBe(true);
    expect(bytes.includes(Buffer.from('3a0d636f6d2e6d6963726f736f6674', 'hex'))).toBe(true); // NodeProto.domain
    // opset_import { domain: 'com.microsoft', version: 1 } after the default domain's
    expect(bytes.subarray(-19).toString('hex')).toBe('42110a0d636f6d2e6d6963726f736f66741001');
  });
});

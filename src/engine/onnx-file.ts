/**
 * What the engine needs to know of an `.onnx` file before ONNX Runtime loads it, read straight from
 * its protobuf without reading the weights: a 2 GB file with embedded initializers costs one small
 * read per initializer, because each tensor's payload is skipped by moving the file position.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { ModelLoadError } from '../errors.js';

/** What `scanOnnxGraph` found. */
export interface OnnxGraphScan {
  irVersion: number;
  /** Imported opset version per domain; `''` is the default ONNX domain. */
  opsets: Record<string, number>;
  /**
   * Node counts per operator, over the main graph, every subgraph (If/Loop/Scan branches) and the
   * model's local functions. Default-domain operators are bare (`MatMul`), others are qualified
   * as onnxruntime names them (`com.microsoft.GroupQueryAttention`).
   */
  opTypes: Record<string, number>;
  /** The main graph's inputs that are not initializers, in file order. */
  inputs: string[];
  outputs: string[];
  /** The files initializers keep their data in, relative to the `.onnx` file's directory. */
  externalData: string[];
  /** Bytes read from the file, the weights not among them. */
  bytesRead: number;
}

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

// ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, FunctionProto field numbers (onnx/onnx.proto).
const MODEL = { irVersion: 1, graph: 7, opsetImport: 8, functions: 25 } as const;
const GRAPH = { node: 1, initializer: 5, input: 11, output: 12 } as const;
const NODE = { opType: 4, attribute: 5, domain: 7 } as const;
const ATTRIBUTE = { g: 6, graphs: 11 } as const;
const TENSOR = { name: 8, externalData: 13 } as const;
const FUNCTION = { node: 7 } as const;

/** After a jump past a payload only a tensor header is needed; sequential parts are read in larger pieces. */
const SMALL_READ = 1024;
const LARGE_READ = 64 * 1024;
/** No name or op type is this long; a longer string means the bytes are not what we think. */
const MAX_STRING = 1 << 20;

const DEFAULT_DOMAINS = new Set(['', 'ai.onnx']);

/** A forward-only protobuf reader over a file handle, with one buffer and cheap skips. */
class ProtoFileReader {
  pos = 0;
  bytesRead = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  private jumped = true;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly file: string,
  ) {}

  /** Makes `n` bytes from `pos` available (fewer only at the end of the file). */
  private async fill(n: number): Promise<void> {
    const bufEnd = this.bufStart + this.buf.length;
    if (this.pos >= this.bufStart && (this.pos + n <= bufEnd || bufEnd === this.size)) return;
    const length = Math.min(Math.max(n, this.jumped ? SMALL_READ : LARGE_READ), this.size - this.pos);
    const buf = Buffer.alloc(Math.max(length, 0));
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.handle.read(buf, got, length - got, this.pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.buf = buf.subarray(0, got);
    this.bufStart = this.pos;
    this.bytesRead += got;
    this.jumped = false;
  }

  truncated(): ModelLoadError {
    return new ModelLoadError(`${this.file} is truncated or not an ONNX model: its protobuf ends early at byte ${this.pos}`);
  }

  async varint(end: number): Promise<number> {
    await this.fill(10);
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw this.truncated();
      const byte = this.buf[this.pos - this.bufStart];
      if (byte === undefined) throw this.truncated();
      this.pos++;
      // Multiplication, not shifts: lengths and offsets go past 2^31.
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new ModelLoadError(`${this.file} is not an ONNX model: malformed varint at byte ${this.pos}`);
  }

  async string(length: number, end: number): Promise<string> {
    if (length > MAX_STRING || this.pos + length > end) throw this.truncated();
    await this.fill(length);
    const offset = this.pos - this.bufStart;
    if (offset + length > this.buf.length) throw this.truncated();
    this.pos += length;
    return this.buf.toString('utf8', offset, offset + length);
  }

  skip(length: number, end: number): void {
    if (this.pos + length > end) throw this.truncated();
    this.pos += length;
    if (this.pos > this.bufStart + this.buf.length) this.jumped = true;
  }

  /**
   * Reads the fields of the message ending at `end`. `onField` consumes a LEN field's payload (it
   * returns true) or leaves it to be skipped; varints are passed by value, other scalars skipped.
   */
  async fields(end: number, onField: (field: number, wire: number, value: number) => Promise<boolean> | boolean): Promise<void> {
    while (this.pos < end) {
      const tag = await this.varint(end);
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      if (wire === VARINT) {
        await onField(field, wire, await this.varint(end));
      } else if (wire === LEN) {
        const length = await this.varint(end);
        const stop = this.pos + length;
        if (stop > end) throw this.truncated();
        if (await onField(field, wire, length)) {
          if (this.pos !== stop) throw new ModelLoadError(`${this.file}: field ${field} at byte ${stop - length} was misread`);
        } else {
          this.skip(length, end);
        }
      } else if (wire === FIXED64) {
        this.skip(8, end);
      } else if (wire === FIXED32) {
        this.skip(4, end);
      } else {
        throw new ModelLoadError(`${this.file} is not an ONNX model: protobuf wire type ${wire} at byte ${this.pos}`);
      }
    }
  }
}

/** Collects op counts, external data locations and the main graph's inputs while walking the file. */
class GraphWalker {
  readonly opTypes: Record<string, number> = {};
  readonly externalData = new Set<string>();
  readonly inputs: string[] = [];
  readonly outputs: string[] = [];
  readonly initializers = new Set<string>();

  constructor(private readonly r: ProtoFileReader) {}

  /** `main`: the top-level graph, whose inputs and outputs are the model's. */
  async graph(end: number, main: boolean): Promise<void> {
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN) return false;
      const stop = this.r.pos + length;
      if (field === GRAPH.node) await this.node(stop);
      else if (field === GRAPH.initializer) await this.tensor(stop, main);
      else if (main && (field === GRAPH.input || field === GRAPH.output)) {
        // ValueInfoProto: name is field 1; its type is not needed here.
        const name = await this.firstString(stop, 1);
        (field === GRAPH.input ? this.inputs : this.outputs).push(name);
      } else return false;
      return true;
    });
  }

  async node(end: number): Promise<void> {
    let opType = '';
    let domain = '';
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN) return false;
      const stop = this.r.pos + length;
      if (field === NODE.opType) opType = await this.r.string(length, stop);
      else if (field === NODE.domain) domain = await this.r.string(length, stop);
      else if (field === NODE.attribute) await this.attribute(stop);
      else return false;
      return true;
    });
    const key = DEFAULT_DOMAINS.has(domain) ? opType : `${domain}.${opType}`;
    this.opTypes[key] = (this.opTypes[key] ?? 0) + 1;
  }

  /** Only graph-valued attributes are entered; tensors (Constant values) are skipped. */
  async attribute(end: number): Promise<void> {
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN || (field !== ATTRIBUTE.g && field !== ATTRIBUTE.graphs)) return false;
      await this.graph(this.r.pos + length, false);
      return true;
    });
  }

  /** An initializer: its name, and where its data lives when outside the file; the payload is skipped. */
  async tensor(end: number, main: boolean): Promise<void> {
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN) return false;
      const stop = this.r.pos + length;
      if (field === TENSOR.name && main) this.initializers.add(await this.r.string(length, stop));
      else if (field === TENSOR.externalData) {
        // StringStringEntryProto { key = 1, value = 2 }.
        let key = '';
        let value = '';
        await this.r.fields(stop, async (f, w, n) => {
          if (w !== LEN || (f !== 1 && f !== 2)) return false;
          const text = await this.r.string(n, this.r.pos + n);
          if (f === 1) key = text;
          else value = text;
          return true;
        });
        if (key === 'location') this.externalData.add(value);
      } else return false;
      return true;
    });
  }

  async localFunction(end: number): Promise<void> {
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN || field !== FUNCTION.node) return false;
      await this.node(this.r.pos + length);
      return true;
    });
  }

  private async firstString(end: number, wanted: number): Promise<string> {
    let value = '';
    await this.r.fields(end, async (field, wire, length) => {
      if (wire !== LEN || field !== wanted) return false;
      value = await this.r.string(length, this.r.pos + length);
      return true;
    });
    return value;
  }
}

async function openModel(file: string): Promise<{ handle: FileHandle; size: number }> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ModelLoadError(code === 'ENOENT' ? `${file} not found` : `Cannot read ${file}: ${(error as Error).message}`, error);
  }
  return { handle, size: (await handle.stat()).size };
}

/** The ModelProto's first field: ir_version, a varint under field 1 (tag byte 0x08), as onnx writes it. */
async function readIrVersion(r: ProtoFileReader, file: string): Promise<number> {
  const notOnnx = () => new ModelLoadError(`${file} is not an ONNX model (no ModelProto header)`);
  if (r.size < 2 || (await r.varint(r.size).catch(() => -1)) !== (MODEL.irVersion << 3) + VARINT) throw notOnnx();
  const irVersion = await r.varint(r.size).catch(() => -1);
  // IR versions run from 1 (2017) to 11 (2025); room is left for the next few.
  if (irVersion < 1 || irVersion > 100) throw notOnnx();
  return irVersion;
}

/**
 * Checks that `file` starts like an ONNX ModelProto, reading a few bytes; resolves to its IR version.
 *
 * @example
 * await checkOnnxHeader('models/smollm2/onnx/model.onnx'); // 8
 */
export async function checkOnnxHeader(file: string): Promise<number> {
  const { handle, size } = await openModel(file);
  try {
    return await readIrVersion(new ProtoFileReader(handle, size, file), file);
  } finally {
    await handle.close();
  }
}

/**
 * Reads an ONNX file's graph structure without its weights: operator counts (subgraphs and local
 * functions included), the graph's inputs and outputs, and the external data files it names.
 *
 * @example
 * const scan = await scanOnnxGraph('model/onnx/model_q4.onnx');
 * scan.opTypes['com.microsoft.MatMulNBits']; // 112
 * scan.inputs; // ['input_ids', 'attention_mask', 'past_key_values.0.key', ...]
 */
export async function scanOnnxGraph(file: string): Promise<OnnxGraphScan> {
  const { handle, size } = await openModel(file);
  try {
    const r = new ProtoFileReader(handle, size, file);
    const irVersion = await readIrVersion(r, file);
    const walker = new GraphWalker(r);
    const opsets: Record<string, number> = {};
    let graphs = 0;
    await r.fields(size, async (field, wire, length) => {
      if (wire !== LEN) return false;
      const stop = r.pos + length;
      if (field === MODEL.graph) {
        graphs++;
        await walker.graph(stop, true);
      } else if (field === MODEL.opsetImport) {
        // OperatorSetIdProto { domain = 1, version = 2 }.
        let domain = '';
        let version = 0;
        await r.fields(stop, async (f, w, value) => {
          if (f === 1 && w === LEN) domain = await r.string(value, r.pos + value);
          else if (f === 2 && w === VARINT) version = value;
          else return false;
          return true;
        });
        opsets[DEFAULT_DOMAINS.has(domain) ? '' : domain] = version;
      } else if (field === MODEL.functions) {
        await walker.localFunction(stop);
      } else return false;
      return true;
    });
    if (graphs !== 1) throw new ModelLoadError(`${file} is not an ONNX model: it has ${graphs} graphs, expected one`);
    return {
      irVersion,
      opsets,
      opTypes: walker.opTypes,
      // Before IR version 4, initializers were listed among the inputs too.
      inputs: walker.inputs.filter((name) => !walker.initializers.has(name)),
      outputs: walker.outputs,
      externalData: [...walker.externalData],
      bytesRead: r.bytesRead,
    };
  } finally {
    await handle.close();
  }
}

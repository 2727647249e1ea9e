import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { ModelLoadError } from '../errors.js';
import type { ModelConfig } from './model-dir.js';

export type KvDtype = 'float32' | 'float16';
export type KvArray = Float32Array | Uint16Array;

/** One forward pass's inputs for a batch; past tensors are `[batch, kvHeads, past, headDim]`. */
export interface ForwardInputs {
  batch: number;
  seqLen: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  past: ort.Tensor[];
}

export interface ForwardOutputs {
  /** `[batch, seqLen, vocab]` as float32 (float16 logits are widened). */
  logits: Float32Array;
  present: ort.Tensor[];
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch']);

function isTensorMeta(m: ort.InferenceSession.ValueMetadata): m is ort.InferenceSession.TensorValueMetadata {
  return m.isTensor;
}

/** An ONNX decoder with a KV cache in the Optimum layout; names, dtype and shapes come from the session's metadata. */
export class ModelSession {
  readonly kvDtype: KvDtype;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  readonly hasPositionIds: boolean;
  private readonly pastNames: string[];
  private readonly presentNames: string[];
  private readonly hasCacheBranch: boolean;

  private constructor(private readonly session: ort.InferenceSession, file: string, config: ModelConfig) {
    const inputs = session.inputMetadata.filter(isTensorMeta);
    const outputs = new Set(session.outputNames);
    const past = inputs.filter((m) => PAST.test(m.name));
    if (config.isEncoderDecoder || inputs.some((m) => m.name === 'encoder_hidden_states')) {
      throw new ModelLoadError(`${file} is an encoder-decoder model: only decoder-only models are supported`);
    }
    if (past.length === 0) {
      throw new ModelLoadError(
        `${file} has no past_key_values.N.key/value inputs: export it with a KV cache (optimum-cli export onnx --task text-generation-with-past)`,
      );
    }
    const unknown = inputs.map((m) => m.name).filter((n) => !KNOWN_INPUTS.has(n) && !PAST.test(n));
    if (unknown.length > 0) throw new ModelLoadError(`${file} has inputs this engine cannot feed: ${unknown.join(', ')}`);
    if (!outputs.has('logits')) throw new ModelLoadError(`${file} has no "logits" output`);

    const layers = past.length / 2;
    this.pastNames = [];
    this.presentNames = [];
    for (let i = 0; i < layers; i++) {
      for (const kind of ['key', 'value']) {
        const name = `past_key_values.${i}.${kind}`;
        const presentName = `present.${i}.${kind}`;
        if (!past.some((m) => m.name === name) || !outputs.has(presentName)) {
          throw new ModelLoadError(`${file} lacks ${name} or ${presentName}: expected the Optimum KV-cache layout`);
        }
        this.pastNames.push(name);
        this.presentNames.push(presentName);
      }
    }
    const first = past[0];
    if (first.type !== 'float32' && first.type !== 'float16') {
      throw new ModelLoadError(`${file}: KV cache of type ${first.type} is not supported (float32 or float16)`);
    }
    this.kvDtype = first.type;
    const dims = first.shape;
    this.kvHeads = typeof dims[1] === 'number' ? dims[1] : config.numKvHeads;
    this.headDim = typeof dims[3] === 'number' ? dims[3] : config.headDim;
    if (!this.kvHeads || !this.headDim) {
      throw new ModelLoadError(`${file}: cannot tell the KV heads and head_dim from the graph or config.json`);
    }
    this.vocabSize = config.vocabSize;
    this.hasPositionIds = inputs.some((m) => m.name === 'position_ids');
    this.hasCacheBranch = inputs.some((m) => m.name === 'use_cache_branch');
  }

  static async load(file: string, config: ModelConfig, threads?: number): Promise<ModelSession> {
    const head = await readFile(file).then((b) => b.subarray(0, 64), () => null);
    // A protobuf ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
    if (!head || head[0] !== 0x08) throw new ModelLoadError(`${file} is not an ONNX model (no ModelProto header)`);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, {
        graphOptimizationLevel: 'all',
        executionMode: 'sequential',
        ...(threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
      });
    } catch (error) {
      throw new ModelLoadError(`${file} could not be loaded by ONNX Runtime: ${(error as Error).message}`, error);
    }
    return new ModelSession(session, file, config);
  }

  get numLayers(): number {
    return this.pastNames.length / 2;
  }

  /** Empty past tensors (`past = 0`) for a prefill of `batch` rows. */
  emptyPast(batch: number): ort.Tensor[] {
    const empty = this.kvDtype === 'float16' ? new Uint16Array(0) : new Float32Array(0);
    return this.pastNames.map(() => new ort.Tensor(this.kvDtype, empty, [batch, this.kvHeads, 0, this.headDim]));
  }

  async forward(inputs: ForwardInputs): Promise<ForwardOutputs> {
    const { batch, seqLen } = inputs;
    const total = inputs.attentionMask.length / batch;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', inputs.inputIds, [batch, seqLen]),
      attention_mask: new ort.Tensor('int64', inputs.attentionMask, [batch, total]),
    };
    if (this.hasPositionIds) feeds.position_ids = new ort.Tensor('int64', inputs.positionIds, [batch, seqLen]);
    if (this.hasCacheBranch) feeds.use_cache_branch = new ort.Tensor('bool', [total > seqLen], [1]);
    this.pastNames.forEach((name, i) => (feeds[name] = inputs.past[i]));
    const out = await this.session.run(feeds);
    const logits = out.logits;
    return {
      logits: logits.type === 'float16' ? halfToFloat(logits.data as Uint16Array) : (logits.data as Float32Array),
      present: this.presentNames.map((name) => out[name]),
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** IEEE half → single precision, for float16 logits. */
export function halfToFloat(half: Uint16Array): Float32Array {
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) {
    const h = half[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * 2 ** -14 * (frac / 1024);
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return out;
}

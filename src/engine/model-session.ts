import * as ort from 'onnxruntime-node';
import { ModelLoadError } from '../errors.js';
import type { ModelConfig } from './model-dir.js';
import { checkOnnxHeader } from './onnx-file.js';
import { type AttentionFamily, type AttentionPlan, attentionFamilyFromGraph, FAMILY_LABELS, planFor } from './attention-family.js';
import { halfBits, type HalfData, widenHalf } from './half.js';
import { kvData } from './kv-batch.js';

export type KvDtype = 'float32' | 'float16';

/** One forward pass's inputs for a batch; past tensors are `[batch, kvHeads, past, headDim]`. */
export interface ForwardInputs {
  batch: number;
  seqLen: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  positionIds: BigInt64Array;
  past: ort.Tensor[];
  /** Positions (from the end) whose logits are needed, where the graph can skip the rest; 0 = all. */
  logitsToKeep?: number;
  /** The pass writes its new keys into `past` (bound as the `present.*` outputs) instead of returning a new cache. */
  inPlace?: boolean;
}

/**
 * The logits of a pass, `[batch, columns, vocab]`, read one row at a time: float16 logits are
 * widened only for the rows that are read, not the whole `[rows, seq, vocab]` tensor.
 */
export class Logits {
  private readonly bits: Uint16Array | null;

  constructor(
    private readonly data: Float32Array | HalfData,
    readonly batch: number,
    readonly columns: number,
    readonly vocab: number,
  ) {
    this.bits = data instanceof Float32Array ? null : halfBits(data);
  }

  /** Row `row`'s logits at returned column `column`, as float32 (a view for float32 logits). */
  at(row: number, column: number): Float32Array {
    const start = (row * this.columns + column) * this.vocab;
    if (this.bits) return widenHalf(this.bits, start, this.vocab);
    return (this.data as Float32Array).subarray(start, start + this.vocab);
  }
}

export interface ForwardOutputs {
  logits: Logits;
  present: ort.Tensor[];
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const LOGITS_TO_KEEP = ['num_logits_to_keep', 'logits_to_keep'];
const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch', ...LOGITS_TO_KEEP]);

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
  private readonly logitsToKeepName: string | undefined;
  /** Set by `load` once the attention family is known. */
  attention!: AttentionPlan;

  private constructor(
    private readonly session: ort.InferenceSession,
    file: string,
    config: ModelConfig,
    opTypes: ReadonlySet<string>,
  ) {
    const inputs = session.inputMetadata.filter(isTensorMeta);
    const outputs = new Set(session.outputNames);
    const past = inputs.filter((m) => PAST.test(m.name));
    if (config.isEncoderDecoder || inputs.some((m) => m.name === 'encoder_hidden_states')) {
      throw new ModelLoadError(`${file} is an encoder-decoder model: only decoder-only models are supported`);
    }
    // Each refusal names the family read from the graph, so a user knows which exporter's convention it missed.
    const graph = `${file} (${FAMILY_LABELS[attentionFamilyFromGraph(opTypes, session.inputNames)]})`;
    if (past.length === 0) {
      const cacheLike = inputs.map((m) => m.name).filter((name) => /past|cache/i.test(name));
      throw new ModelLoadError(
        cacheLike.length > 0
          ? `${graph} names its cache inputs ${cacheLike.slice(0, 4).join(', ')}${cacheLike.length > 4 ? ', ...' : ''}: this engine feeds ` +
              'past_key_values.N.key/value and reads present.N.key/value, the names Optimum and onnxruntime-genai write'
          : `${graph} has no past_key_values.N.key/value inputs: export it with a KV cache (optimum-cli export onnx --task text-generation-with-past)`,
      );
    }
    const unknown = inputs.map((m) => m.name).filter((n) => !KNOWN_INPUTS.has(n) && !PAST.test(n));
    if (unknown.length > 0) {
      throw new ModelLoadError(
        `${graph} has inputs this engine cannot feed: ${unknown.join(', ')} (it feeds ${[...KNOWN_INPUTS].join(', ')} and past_key_values.N.key/value)`,
      );
    }
    if (!outputs.has('logits')) throw new ModelLoadError(`${graph} has no "logits" output`);

    const layers = past.length / 2;
    this.pastNames = [];
    this.presentNames = [];
    for (let i = 0; i < layers; i++) {
      for (const kind of ['key', 'value']) {
        const name = `past_key_values.${i}.${kind}`;
        const presentName = `present.${i}.${kind}`;
        if (!past.some((m) => m.name === name) || !outputs.has(presentName)) {
          throw new ModelLoadError(`${graph} lacks ${name} or ${presentName}: expected the Optimum KV-cache layout`);
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
    this.logitsToKeepName = LOGITS_TO_KEEP.find((name) => inputs.some((m) => m.name === name));
  }

  /** `opTypes`: the graph's node types (onnx-file.ts), which tell the attention family. */
  static async load(file: string, config: ModelConfig, opTypes: ReadonlySet<string>, threads?: number): Promise<ModelSession> {
    await checkOnnxHeader(file);
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
    const model = new ModelSession(session, file, config, opTypes);
    const family = attentionFamilyFromGraph(opTypes, session.inputNames);
    const plan = planFor(family === 'probe' ? await model.probePositions() : family);
    model.attention = { ...plan, inPlace: plan.layout === 'right' && (await model.probeInPlace()) };
    return model;
  }

  /**
   * Whether GroupQueryAttention writes a decode step's keys into a wider past bound as its present
   * (its shared-buffer mode, as onnxruntime-genai runs it) with the logits it gives when it
   * concatenates. Only exported graphs whose `present.*` come straight from the op can; any other
   * answer keeps the copying path.
   */
  private async probeInPlace(): Promise<boolean> {
    const prompt = await this.probePrompt();
    const step = { batch: 1, seqLen: 1, inputIds: BigInt64Array.of(3n), positionIds: BigInt64Array.of(2n) };
    const copied = await this.forward({ ...step, attentionMask: BigInt64Array.of(1n, 1n, 1n), past: prompt.present });
    const buffer = this.widen(prompt.present, 4);
    try {
      const inPlace = await this.forward({ ...step, attentionMask: BigInt64Array.of(1n, 1n, 1n, 0n), past: buffer, inPlace: true });
      return this.sameLogits(copied.logits.at(0, 0), inPlace.logits.at(0, 0));
    } catch {
      return false;
    }
  }

  /** The cache of a two-token prompt, which both probes decode one token after. */
  private probePrompt(): Promise<ForwardOutputs> {
    return this.forward({
      batch: 1,
      seqLen: 2,
      inputIds: BigInt64Array.of(1n, 2n),
      attentionMask: BigInt64Array.of(1n, 1n),
      positionIds: BigInt64Array.of(0n, 1n),
      past: this.emptyPast(1),
    });
  }

  /**
   * A graph without `position_ids` takes positions from the mask or from the column index; only the
   * first survives a row's re-padding. The probe decodes one token after a two-token prompt, once as
   * computed and once with an extra masked column in front of the cached keys, and compares.
   */
  private async probePositions(): Promise<AttentionFamily> {
    const prompt = await this.probePrompt();
    const decode = (past: ort.Tensor[], mask: bigint[]) =>
      this.forward({
        batch: 1,
        seqLen: 1,
        inputIds: BigInt64Array.of(3n),
        attentionMask: BigInt64Array.from(mask),
        positionIds: BigInt64Array.of(2n),
        past,
      });
    const alone = (await decode(prompt.present, [1n, 1n, 1n])).logits.at(0, 0);
    const shifted = (await decode(this.widen(prompt.present, 3, 1), [0n, 1n, 1n, 1n])).logits.at(0, 0);
    return this.sameLogits(alone, shifted) ? 'mask-positions' : 'column-positions';
  }

  /** The same cache `to` columns wide, its columns from `at` on (masked ones before and after). */
  private widen(past: ort.Tensor[], to: number, at = 0): ort.Tensor[] {
    return past.map((tensor) => {
      const [rows, heads, width, dim] = tensor.dims;
      const src = kvData(tensor);
      const out = src instanceof Uint16Array ? new Uint16Array(rows * heads * to * dim) : new Float32Array(rows * heads * to * dim);
      for (let h = 0; h < rows * heads; h++) out.set(src.subarray(h * width * dim, (h + 1) * width * dim), (h * to + at) * dim);
      return new ort.Tensor(tensor.type as 'float32', out, [rows, heads, to, dim]);
    });
  }

  /** Equal up to float rounding (the kernels may sum in another order). */
  private sameLogits(a: Float32Array, b: Float32Array): boolean {
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < a.length; i++) {
      scale = Math.max(scale, Math.abs(a[i]));
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
    }
    return diff <= (this.kvDtype === 'float16' ? 1e-2 : 1e-3) * Math.max(1, scale);
  }

  get numLayers(): number {
    return this.pastNames.length / 2;
  }

  /**
   * Past tensors of `width` masked columns for a prefill of `batch` rows: empty, or zeros that a
   * graph taking positions from the column index sees as the columns before the prompt.
   */
  emptyPast(batch: number, width = 0): ort.Tensor[] {
    const size = batch * this.kvHeads * width * this.headDim;
    return this.pastNames.map(() => {
      const data = this.kvDtype === 'float16' ? new Uint16Array(size) : new Float32Array(size);
      return new ort.Tensor(this.kvDtype, data, [batch, this.kvHeads, width, this.headDim]);
    });
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
    if (this.logitsToKeepName) {
      feeds[this.logitsToKeepName] = new ort.Tensor('int64', BigInt64Array.of(BigInt(inputs.logitsToKeep ?? 0)), []);
    }
    this.pastNames.forEach((name, i) => (feeds[name] = inputs.past[i]));
    const out = inputs.inPlace ? await this.session.run(feeds, this.inPlaceFetches(inputs.past)) : await this.session.run(feeds);
    const logits = out.logits;
    const [, columns, vocab] = logits.dims;
    return {
      logits: new Logits(logits.data as Float32Array | HalfData, batch, columns, vocab),
      present: inputs.inPlace ? inputs.past : this.presentNames.map((name) => out[name]),
    };
  }

  /** The past tensors bound as the `present.*` outputs: onnxruntime writes into their memory. */
  private inPlaceFetches(past: ort.Tensor[]): ort.InferenceSession.FetchesType {
    const fetches: Record<string, ort.Tensor | null> = { logits: null };
    this.presentNames.forEach((name, i) => (fetches[name] = past[i]));
    return fetches;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

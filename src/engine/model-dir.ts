import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';

/** transformers.js's file naming of dtype variants under `onnx/`. */
const DTYPE_SUFFIX: Record<string, string> = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
};

/** What the engine needs from `config.json` and `generation_config.json`. */
export interface ModelConfig {
  modelType: string;
  vocabSize: number;
  maxPositionEmbeddings: number;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  eosTokenIds: number[];
  bosTokenId: number | null;
  isEncoderDecoder: boolean;
}

async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (!required) return null;
    throw new ModelLoadError(`${file} not found: a model directory needs config.json (Hugging Face layout)`, error);
  }
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (error) {
    throw new ModelLoadError(`${file} is not a valid JSON object: ${(error as Error).message}`, error);
  }
}

function ids(value: unknown): number[] {
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value.filter((v): v is number => typeof v === 'number');
  return [];
}

function num(config: Record<string, unknown>, ...keys: string[]): number | undefined {
  for (const key of keys) if (typeof config[key] === 'number') return config[key] as number;
  return undefined;
}

export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const configFile = join(dir, 'config.json');
  const config = (await readJson(configFile, true))!;
  const generation = (await readJson(join(dir, 'generation_config.json'), false)) ?? {};
  const numLayers = num(config, 'num_hidden_layers', 'n_layer', 'num_layers');
  const numHeads = num(config, 'num_attention_heads', 'n_head');
  const hidden = num(config, 'hidden_size', 'n_embd');
  const vocabSize = num(config, 'vocab_size');
  if (numLayers === undefined || vocabSize === undefined) {
    throw new ModelLoadError(`${configFile} lacks num_hidden_layers or vocab_size: expected a decoder-only transformer config`);
  }
  const headDim = num(config, 'head_dim') ?? (hidden && numHeads ? hidden / numHeads : 0);
  const eos = ids(generation.eos_token_id);
  return {
    modelType: String(config.model_type ?? 'unknown'),
    vocabSize,
    maxPositionEmbeddings: num(config, 'max_position_embeddings', 'n_positions', 'max_sequence_length') ?? 2048,
    numLayers,
    numKvHeads: num(config, 'num_key_value_heads') ?? numHeads ?? 0,
    headDim,
    eosTokenIds: eos.length > 0 ? eos : ids(config.eos_token_id),
    bosTokenId: num(generation, 'bos_token_id') ?? num(config, 'bos_token_id') ?? null,
    isEncoderDecoder: config.is_encoder_decoder === true,
  };
}

/** Picks `onnx/model{suffix}.onnx` for the dtype; the error lists what the folder holds. */
export async function findOnnxFile(dir: string, dtype = 'fp32'): Promise<string> {
  const suffix = DTYPE_SUFFIX[dtype];
  if (suffix === undefined) {
    throw new ModelLoadError(`Unknown dtype "${dtype}": expected one of ${Object.keys(DTYPE_SUFFIX).join(', ')}`);
  }
  const name = `model${suffix}.onnx`;
  const candidates = [join(dir, 'onnx', name), join(dir, name)];
  for (const file of candidates) {
    if (await stat(file).then((s) => s.isFile(), () => false)) return file;
  }
  const present = (sub: string) =>
    readdir(join(dir, sub)).then((names) => names.filter((n) => n.endsWith('.onnx')), () => [] as string[]);
  const found = [...(await present('onnx')).map((n) => `onnx/${n}`), ...(await present('.'))];
  throw new ModelLoadError(
    `${candidates[0]} not found (dtype "${dtype}"). ONNX files present: ${found.length > 0 ? found.join(', ') : 'none'}`,
  );
}

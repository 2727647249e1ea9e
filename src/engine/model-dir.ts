/**
 * A model directory: which ONNX file to load and what the JSON files beside it say. The choice of
 * file is a pure function over a list of relative paths and the parsed configs, so a Hub download
 * can decide what to fetch from a repository listing with the same rules as a local load.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { ModelLoadError } from '../errors.js';
import type { Dtype, GenerationDefaults } from '../types.js';
import { type OnnxGraphScan, scanOnnxGraph } from './onnx-file.js';

/** transformers.js v4's file suffix per dtype (`DEFAULT_DTYPE_SUFFIX_MAPPING`, utils/dtypes.js). */
export const DTYPE_SUFFIX: Readonly<Record<Dtype, string>> = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
  q2: '_q2',
  q2f16: '_q2f16',
  q1: '_q1',
  q1f16: '_q1f16',
};

export const DTYPES = Object.keys(DTYPE_SUFFIX) as Dtype[];

export function isDtype(value: unknown): value is Dtype {
  return typeof value === 'string' && Object.hasOwn(DTYPE_SUFFIX, value);
}

/**
 * The small files beside the graph that the engine reads: this module's configs, tokenizer.ts's
 * tokenizer files and chat-template.ts's template files. `special_tokens_map.json` and
 * `added_tokens.json` are not among them: tokenizer.json holds the added tokens and
 * tokenizer_config.json the special-token strings.
 */
export const MODEL_CONFIG_FILES = [
  'config.json',
  'generation_config.json',
  'genai_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
  'chat_template.json',
] as const;

export type JsonObject = Record<string, unknown>;

/** The parsed JSON configs of a model directory; absent files are undefined. */
export interface ModelConfigFiles {
  config?: JsonObject;
  generation?: JsonObject;
  genai?: JsonObject;
}

/** What the engine needs from `config.json`, `generation_config.json` and `genai_config.json`. */
export interface ModelConfig {
  modelType: string;
  vocabSize: number;
  /** The context the model was built for: the smaller of config.json's and genai_config.json's. */
  maxPositionEmbeddings: number;
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  eosTokenIds: number[];
  bosTokenId: number | null;
  isEncoderDecoder: boolean;
  generationDefaults: GenerationDefaults;
}

export interface ModelFileOptions {
  dtype?: Dtype;
  /** A path relative to the model directory; it overrides every other rule. */
  modelFile?: string;
}

/** Which files a load reads, as paths relative to the model directory. */
export interface ModelFilePlan {
  onnx: string;
  /** Data files beside the graph, by their names (`model.onnx_data`, `model.onnx_data_1`, `model.onnx.data`). */
  externalData: string[];
  /** The dtype the file was chosen by; null when `modelFile` or genai_config.json named it. */
  dtype: Dtype | null;
  /** Why this file: `modelFile`, genai_config.json's `model.decoder.filename`, or the dtype's names. */
  source: 'modelFile' | 'genai_config.json' | 'dtype';
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function typeName(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  return value === null ? 'null' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** The value at a dotted path; null counts as absent, as transformers treats it. */
function at(json: JsonObject | undefined, path: string): unknown {
  let value: unknown = json;
  for (const key of path.split('.')) value = isObject(value) ? value[key] : undefined;
  return value ?? undefined;
}

function wrongType(file: string, path: string, expected: string, value: unknown): ModelLoadError {
  return new ModelLoadError(`${file}: \`${path}\` must be ${expected}, got ${typeName(value)}`);
}

function numberAt(json: JsonObject | undefined, file: string, path: string): number | undefined {
  const value = at(json, path);
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw wrongType(file, path, 'a number', value);
  return value;
}

function integerAt(json: JsonObject | undefined, file: string, path: string): number | undefined {
  const value = numberAt(json, file, path);
  if (value !== undefined && !Number.isSafeInteger(value)) throw wrongType(file, path, 'an integer', value);
  return value;
}

/** `eos_token_id` is one id or a list of them; an empty list says nothing. */
function tokenIdsAt(json: JsonObject | undefined, file: string, path: string): number[] | undefined {
  const value = at(json, path);
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? value : [value];
  if (!list.every((id) => Number.isSafeInteger(id))) throw wrongType(file, path, 'a token id or a list of them', value);
  return list.length > 0 ? (list as number[]) : undefined;
}

function firstDefined<T>(...values: Array<T | undefined>): T | undefined {
  return values.find((value) => value !== undefined);
}

/** Sampling defaults the model's authors chose, in the field names transformers uses. */
function readGenerationDefaults(json: JsonObject, file: string, prefix: string): GenerationDefaults {
  const defaults: GenerationDefaults = {
    temperature: numberAt(json, file, `${prefix}temperature`),
    topP: numberAt(json, file, `${prefix}top_p`),
    topK: integerAt(json, file, `${prefix}top_k`),
    repetitionPenalty: numberAt(json, file, `${prefix}repetition_penalty`),
  };
  const doSample = at(json, `${prefix}do_sample`);
  if (doSample !== undefined && typeof doSample !== 'boolean') throw wrongType(file, `${prefix}do_sample`, 'a boolean', doSample);
  defaults.doSample = doSample;
  for (const key of Object.keys(defaults) as Array<keyof GenerationDefaults>) if (defaults[key] === undefined) delete defaults[key];
  return defaults;
}

/**
 * The model's shape, stop tokens and sampling defaults. config.json comes first for the shape;
 * onnxruntime-genai's builder output may have only genai_config.json, whose `model.decoder` fields
 * say the same. eos ids come from generation_config.json, else genai_config.json (which the builder
 * copies from it), else config.json: microsoft's folders have no generation_config.json, and their
 * config.json lists only the base eos (32000 for Phi-3.5, not its turn end `<|end|>`).
 *
 * @example
 * parseModelConfig({ config: JSON.parse(configJson), generation: JSON.parse(generationJson) }).eosTokenIds; // [2]
 */
export function parseModelConfig(files: ModelConfigFiles, where = '.'): ModelConfig {
  const { config, generation, genai } = files;
  if (!config && !genai) {
    throw new ModelLoadError(
      `${where}/config.json not found: a model directory needs config.json (transformers) or genai_config.json (onnxruntime-genai)`,
    );
  }
  const C = 'config.json';
  const G = 'genai_config.json';
  const cfg = (...paths: string[]) => firstDefined(...paths.map((path) => integerAt(config, C, path)));
  const gen = (path: string) => integerAt(genai, G, path);
  const numLayers = firstDefined(cfg('num_hidden_layers', 'n_layer', 'num_layers'), gen('model.decoder.num_hidden_layers'));
  const vocabSize = firstDefined(cfg('vocab_size'), gen('model.vocab_size'));
  if (numLayers === undefined || vocabSize === undefined) {
    throw new ModelLoadError(
      `${where}: neither config.json (num_hidden_layers, vocab_size) nor genai_config.json (model.decoder.num_hidden_layers, model.vocab_size) ` +
        'gives the number of layers and the vocabulary size: expected a decoder-only transformer',
    );
  }
  const numHeads = firstDefined(cfg('num_attention_heads', 'n_head'), gen('model.decoder.num_attention_heads'));
  const hidden = firstDefined(cfg('hidden_size', 'n_embd'), gen('model.decoder.hidden_size'));
  const contexts = [cfg('max_position_embeddings', 'n_positions', 'max_sequence_length'), gen('model.context_length')];
  const known = contexts.filter((n): n is number => n !== undefined);
  const modelType = firstDefined(at(config, 'model_type'), at(genai, 'model.type'));
  const isEncoderDecoder = at(config, 'is_encoder_decoder');
  return {
    modelType: typeof modelType === 'string' ? modelType : 'unknown',
    vocabSize,
    // Neither file names a context (rare: GPT-2-style n_positions is read above): a conservative guess; maxTotalTokens overrides it.
    maxPositionEmbeddings: known.length > 0 ? Math.min(...known) : 2048,
    numLayers,
    numKvHeads: firstDefined(cfg('num_key_value_heads'), gen('model.decoder.num_key_value_heads'), numHeads) ?? 0,
    headDim: firstDefined(cfg('head_dim'), gen('model.decoder.head_size')) ?? (hidden && numHeads ? hidden / numHeads : 0),
    eosTokenIds:
      firstDefined(
        tokenIdsAt(generation, 'generation_config.json', 'eos_token_id'),
        tokenIdsAt(genai, G, 'model.eos_token_id'),
        tokenIdsAt(config, C, 'eos_token_id'),
      ) ?? [],
    bosTokenId:
      firstDefined(integerAt(generation, 'generation_config.json', 'bos_token_id'), cfg('bos_token_id'), gen('model.bos_token_id')) ?? null,
    isEncoderDecoder: isEncoderDecoder === true,
    generationDefaults: generation
      ? readGenerationDefaults(generation, 'generation_config.json', '')
      : genai && isObject(genai.search)
        ? readGenerationDefaults(genai, G, 'search.')
        : {},
  };
}

/** `./onnx\\model.onnx` → `onnx/model.onnx`. */
function normalize(path: string): string {
  return posix.normalize(path.replaceAll('\\', '/')).replace(/^\.\//, '');
}

/** Where transformers.js and Xenova's older exports put a dtype's file, in the order they are tried. */
function dtypeCandidates(dtypeFor: (base: string) => string): Array<{ path: string; dtype: string }> {
  return ['model', 'decoder_model_merged'].flatMap((base) => {
    const dtype = dtypeFor(base);
    const name = `${base}${DTYPE_SUFFIX[dtype as Dtype] ?? ''}.onnx`;
    return [`onnx/${name}`, name].map((path) => ({ path, dtype }));
  });
}

/** What a folder holds, for error messages: the dtypes whose files are there, then any other .onnx files. */
export function describeOnnxFiles(paths: readonly string[]): string {
  const onnx = paths.map(normalize).filter((path) => path.endsWith('.onnx'));
  if (onnx.length === 0) return 'there is no .onnx file';
  const named = new Set<string>();
  const dtypes: string[] = [];
  for (const dtype of DTYPES) {
    const found = dtypeCandidates(() => dtype)
      .filter(({ path }) => onnx.includes(path))
      .map(({ path }) => path);
    found.forEach((path) => named.add(path));
    if (found.length > 0) dtypes.push(`${dtype} (${found.join(', ')})`);
  }
  const others = onnx.filter((path) => !named.has(path));
  return [
    dtypes.length > 0 ? `dtypes present: ${dtypes.join(', ')}` : 'no file named by a dtype',
    ...(others.length > 0 ? [`other ONNX files: ${others.join(', ')}`] : []),
  ].join('; ');
}

/**
 * The dtype transformers.js would pick from config.json: `transformers.js_config.dtype` (one dtype, or
 * one per file base name such as `model`), overridden by its `device_config.cpu.dtype`; `auto` defers.
 */
function configDtype(config: JsonObject | undefined, base: string): string | undefined {
  // The key itself has a dot, so it is read directly, not as a path.
  const tjs = config?.['transformers.js_config'];
  if (!isObject(tjs)) return undefined;
  const value = firstDefined(at(tjs, 'device_config.cpu.dtype'), at(tjs, 'dtype'));
  const dtype = isObject(value) ? value[base] : value;
  if (dtype === undefined || dtype === null || dtype === 'auto') return undefined;
  if (typeof dtype !== 'string') throw wrongType('config.json', 'transformers.js_config.dtype', 'a dtype or a map of them', value);
  return dtype;
}

/** `model.onnx_data`, `model.onnx_data_1`, … (transformers.js's chunks) and `model.onnx.data` (onnxruntime-genai). */
function externalDataOf(onnx: string, paths: readonly string[]): string[] {
  const chunk = (path: string) => {
    if (path === `${onnx}.data` || path === `${onnx}_data`) return 0;
    const match = path.startsWith(`${onnx}_data_`) ? /^\d+$/.exec(path.slice(onnx.length + 6)) : null;
    return match ? Number(match[0]) : -1;
  };
  return paths
    .map((path) => ({ path, n: chunk(path) }))
    .filter(({ n }) => n >= 0)
    .sort((a, b) => a.n - b.n)
    .map(({ path }) => path);
}

/**
 * Chooses the ONNX file, in this order: the `modelFile` option; an explicit `dtype`'s names;
 * genai_config.json's `model.decoder.filename`; the default dtype's names (config.json's
 * `transformers.js_config.dtype`, else fp32). A dtype's names are `onnx/model{suffix}.onnx`,
 * `model{suffix}.onnx`, then `onnx/decoder_model_merged{suffix}.onnx`, `decoder_model_merged{suffix}.onnx`.
 * `paths` are the folder's files relative to it (`/`-separated); `where` names the folder in errors.
 *
 * @example
 * planModelFiles(['config.json', 'onnx/model_q4.onnx', 'onnx/model_q4.onnx_data'], { config }, { dtype: 'q4' });
 * // { onnx: 'onnx/model_q4.onnx', externalData: ['onnx/model_q4.onnx_data'], dtype: 'q4', source: 'dtype' }
 */
export function planModelFiles(
  paths: readonly string[],
  configs: ModelConfigFiles,
  options: ModelFileOptions = {},
  where = '.',
): ModelFilePlan {
  const files = paths.map(normalize);
  const present = new Set(files);
  const plan = (onnx: string, dtype: Dtype | null, source: ModelFilePlan['source']): ModelFilePlan => ({
    onnx,
    externalData: externalDataOf(onnx, files),
    dtype,
    source,
  });

  if (options.modelFile !== undefined) {
    const onnx = normalize(options.modelFile);
    if (!present.has(onnx)) throw new ModelLoadError(`modelFile ${onnx} not found in ${where}; ${describeOnnxFiles(files)}`);
    return plan(onnx, null, 'modelFile');
  }

  const genai = configs.genai;
  if (options.dtype === undefined && genai !== undefined) {
    const filename = at(genai, 'model.decoder.filename');
    if (typeof filename !== 'string' || filename === '') {
      const got = filename === undefined ? '' : ` (got ${typeName(filename)})`;
      throw new ModelLoadError(
        `${where}/genai_config.json has no \`model.decoder.filename\`${got}: ${describeOnnxFiles(files)}; ` +
          'pass dtype or modelFile to choose one',
      );
    }
    const onnx = normalize(filename);
    if (!present.has(onnx)) {
      throw new ModelLoadError(
        `${where}/genai_config.json names ${onnx} (model.decoder.filename), which is not there: ${describeOnnxFiles(files)}; ` +
          'pass dtype or modelFile to choose one',
      );
    }
    return plan(onnx, null, 'genai_config.json');
  }

  const dtypeFor = (base: string) => options.dtype ?? configDtype(configs.config, base) ?? 'fp32';
  const candidates = dtypeCandidates(dtypeFor);
  const unknown = candidates.find(({ dtype }) => !isDtype(dtype));
  if (unknown) {
    throw new ModelLoadError(
      `${where}/config.json: transformers.js_config.dtype "${unknown.dtype}" is not a dtype this engine knows ` +
        `(${DTYPES.join(', ')}); ${describeOnnxFiles(files)}; pass dtype to choose one`,
    );
  }
  const found = candidates.find(({ path }) => present.has(path));
  if (found) return plan(found.path, found.dtype as Dtype, 'dtype');
  const [first, ...rest] = candidates.map(({ path }) => path);
  const chosenBy = options.dtype !== undefined ? 'dtype' : candidates[0].dtype === 'fp32' ? 'default dtype' : 'config.json dtype';
  throw new ModelLoadError(
    `${where}/${first} not found (${chosenBy} "${candidates[0].dtype}"; nor ${rest.join(', ')}): ${describeOnnxFiles(files)}`,
  );
}

/** A JSON object file, or undefined when the file is absent. */
export async function readJsonFile(file: string): Promise<JsonObject | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`Cannot read ${file}: ${(error as Error).message}`, error);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ModelLoadError(`${file} is not valid JSON: ${(error as Error).message}`, error);
  }
  if (!isObject(value)) throw new ModelLoadError(`${file} is not a JSON object (got ${typeName(value)})`);
  return value;
}

/** Files of `sub` (relative to `dir`), as `/`-separated paths relative to `dir`; none if it is no folder. */
async function listFiles(dir: string, sub: string): Promise<string[]> {
  const entries = await readdir(join(dir, sub), { withFileTypes: true }).catch(() => []);
  // A Hugging Face cache snapshot holds symlinks into its blobs/ folder.
  return entries
    .filter((entry) => entry.isFile() || entry.isSymbolicLink())
    .map((entry) => (sub === '.' ? entry.name : posix.join(sub, entry.name)));
}

export interface ModelDir {
  config: ModelConfig;
  plan: ModelFilePlan;
  /** The graph's absolute path. */
  onnxFile: string;
  graph: OnnxGraphScan;
}

/**
 * Reads a model directory's configs, chooses its ONNX file and reads the graph's structure
 * (onnx-file.ts); every data file the graph names must be beside it.
 *
 * @example
 * const { onnxFile, config, graph } = await openModelDir('./models/smollm2', { dtype: 'q4' });
 */
export async function openModelDir(dir: string, options: ModelFileOptions = {}): Promise<ModelDir> {
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new ModelLoadError(`${dir} is not a directory`);
  const configs: ModelConfigFiles = {
    config: await readJsonFile(join(dir, 'config.json')),
    generation: await readJsonFile(join(dir, 'generation_config.json')),
    genai: await readJsonFile(join(dir, 'genai_config.json')),
  };
  const config = parseModelConfig(configs, dir);
  const named = [options.modelFile, at(configs.genai, 'model.decoder.filename')].filter((f): f is string => typeof f === 'string');
  const folders = new Set(['.', 'onnx', ...named.map((file) => posix.dirname(normalize(file)))]);
  const paths = (await Promise.all([...folders].map((sub) => listFiles(dir, sub)))).flat();
  const plan = planModelFiles(paths, configs, options, dir);
  const onnxFile = join(dir, plan.onnx);
  const graph = await scanOnnxGraph(onnxFile);
  for (const location of graph.externalData) {
    const data = join(dirname(onnxFile), location);
    if (
      await stat(data).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      continue;
    const beside = (await listFiles(dirname(onnxFile), '.')).filter((name) => /\.onnx(_data(_\d+)?|\.data)$/.test(name));
    throw new ModelLoadError(
      `${onnxFile} keeps its weights in ${location}, which is not beside it (data files there: ${beside.join(', ') || 'none'}); ` +
        `the name is written in the graph, so a renamed data file must get its name back`,
    );
  }
  return { config, plan, onnxFile, graph };
}

/**
 * A model directory: which ONNX file to load and what the JSON files beside it say. The choice of
 * file is a pure function over a list of relative paths and the parsed configs, so a Hub download
 * can decide what to fetch from a repository listing with the same rules as a local load.
 */
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { readJsonObject } from '../json-file.js';
import { isPlainObject, type JsonObject, typeName } from '../protocol/json-shape.js';
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

export type { JsonObject } from '../protocol/json-shape.js';

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
  /** The same in words, for `check`: `dtype "q4f16", the only one there`. */
  reason: string;
}

/** The value at a dotted path; null counts as absent, as transformers treats it. */
function at(json: JsonObject | undefined, path: string): unknown {
  let value: unknown = json;
  for (const key of path.split('.')) value = isPlainObject(value) ? value[key] : undefined;
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
  checkGenaiNames(genai, where);
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
      : genai && isPlainObject(genai.search)
        ? searchDefaults(readGenerationDefaults(genai, G, 'search.'))
        : {},
  };
}

/** transformers' `GenerationConfig` defaults, in GenerationDefaults' names. */
const GENERATION_CONFIG_DEFAULTS: GenerationDefaults = { doSample: false, temperature: 1, topP: 1, topK: 50, repetitionPenalty: 1 };

/**
 * genai_config.json's `search` is the builder's dump of the whole GenerationConfig, its defaults
 * included (top_k 50), and microsoft's folders ship `do_sample: false` with `top_k: 1`: read as
 * generation_config.json is, every OpenAI request that set only a temperature would be greedy. So
 * only what differs from GenerationConfig's defaults counts, as vLLM reads generation_config.json
 * (`to_diff_dict`), and without `do_sample` the sampling fields, which genai's greedy search never
 * uses, count for nothing.
 */
function searchDefaults(search: GenerationDefaults): GenerationDefaults {
  const defaults: GenerationDefaults = {};
  for (const key of Object.keys(search) as Array<keyof GenerationDefaults>) {
    if (search[key] !== GENERATION_CONFIG_DEFAULTS[key]) Object.assign(defaults, { [key]: search[key] });
  }
  if (search.doSample !== true) {
    delete defaults.temperature;
    delete defaults.topP;
    delete defaults.topK;
  }
  return defaults;
}

/**
 * The names this engine feeds and reads (model-session.ts), which are the ones onnxruntime-genai's
 * builder writes; genai_config.json maps its keys to the graph's names.
 */
const GENAI_NAMES: Readonly<Record<string, string>> = {
  'inputs.input_ids': 'input_ids',
  'inputs.attention_mask': 'attention_mask',
  'inputs.position_ids': 'position_ids',
  'inputs.past_key_names': 'past_key_values.%d.key',
  'inputs.past_value_names': 'past_key_values.%d.value',
  'outputs.logits': 'logits',
  'outputs.present_key_names': 'present.%d.key',
  'outputs.present_value_names': 'present.%d.value',
};

/**
 * Refuses a genai_config.json that gives the graph's inputs or outputs other names than the ones this
 * engine uses: it would otherwise fail later with a message about the graph, not about the names.
 */
function checkGenaiNames(genai: JsonObject | undefined, where: string): void {
  for (const [key, name] of Object.entries(GENAI_NAMES)) {
    const value = at(genai, `model.decoder.${key}`);
    if (value === undefined || value === name) continue;
    throw new ModelLoadError(
      `${where}/genai_config.json maps \`model.decoder.${key}\` to ${JSON.stringify(value)}: this engine feeds and reads only the ` +
        `names onnxruntime-genai's builder writes (${name}); export the graph with them`,
    );
  }
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

/** The dtypes whose files are among `onnx`, each with its files in the order they are tried. */
function dtypesPresent(onnx: readonly string[]): Array<{ dtype: Dtype; paths: string[] }> {
  return DTYPES.map((dtype) => ({
    dtype,
    paths: dtypeCandidates(() => dtype)
      .map(({ path }) => path)
      .filter((path) => onnx.includes(path)),
  })).filter(({ paths }) => paths.length > 0);
}

/** What a folder holds, for error messages: the dtypes whose files are there, then any other .onnx files. */
export function describeOnnxFiles(paths: readonly string[]): string {
  const onnx = paths.map(normalize).filter((path) => path.endsWith('.onnx'));
  if (onnx.length === 0) return 'there is no .onnx file';
  const present = dtypesPresent(onnx);
  const named = new Set(present.flatMap(({ paths }) => paths));
  const others = onnx.filter((path) => !named.has(path));
  return [
    present.length > 0
      ? `dtypes present: ${present.map(({ dtype, paths }) => `${dtype} (${paths.join(', ')})`).join(', ')}`
      : 'no file named by a dtype',
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
  if (!isPlainObject(tjs)) return undefined;
  const value = firstDefined(at(tjs, 'device_config.cpu.dtype'), at(tjs, 'dtype'));
  const dtype = isPlainObject(value) ? value[base] : value;
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
 * genai_config.json's `model.decoder.filename` (beside it, or under `onnx/` where transformers.js
 * repositories that ship the builder's config keep the graph); the default dtype's names
 * (config.json's `transformers.js_config.dtype`, else fp32, else the one dtype the folder has).
 * A dtype's names are `onnx/model{suffix}.onnx`, `model{suffix}.onnx`, then
 * `onnx/decoder_model_merged{suffix}.onnx`, `decoder_model_merged{suffix}.onnx`.
 * `paths` are the folder's files relative to it (`/`-separated); `where` names the folder in errors.
 *
 * @example
 * planModelFiles(['config.json', 'onnx/model_q4.onnx', 'onnx/model_q4.onnx_data'], { config }, { dtype: 'q4' });
 * // { onnx: 'onnx/model_q4.onnx', externalData: ['onnx/model_q4.onnx_data'], dtype: 'q4', source: 'dtype', reason: 'dtype "q4", as asked' }
 */
export function planModelFiles(
  paths: readonly string[],
  configs: ModelConfigFiles,
  options: ModelFileOptions = {},
  where = '.',
): ModelFilePlan {
  const files = paths.map(normalize);
  const present = new Set(files);
  const plan = (onnx: string, dtype: Dtype | null, source: ModelFilePlan['source'], reason: string): ModelFilePlan => ({
    onnx,
    externalData: externalDataOf(onnx, files),
    dtype,
    source,
    reason,
  });

  if (options.modelFile !== undefined) {
    const onnx = normalize(options.modelFile);
    if (!present.has(onnx)) throw new ModelLoadError(`modelFile ${onnx} not found in ${where}; ${describeOnnxFiles(files)}`);
    return plan(onnx, null, 'modelFile', 'the modelFile option');
  }

  const genai = configs.genai;
  // The file genai_config.json names when it is not there: the dtype's names are tried next.
  let genaiMissing: string | undefined;
  if (options.dtype === undefined && genai !== undefined) {
    const filename = at(genai, 'model.decoder.filename');
    if (typeof filename !== 'string' || filename === '') {
      const got = filename === undefined ? '' : ` (got ${typeName(filename)})`;
      throw new ModelLoadError(
        `${where}/genai_config.json has no \`model.decoder.filename\`${got}: ${describeOnnxFiles(files)}; ` +
          'pass dtype or modelFile to choose one',
      );
    }
    const named = normalize(filename);
    const found = [named, posix.join('onnx', named)].find((path) => present.has(path));
    if (found) return plan(found, null, 'genai_config.json', "genai_config.json's model.decoder.filename");
    genaiMissing = named;
  }

  const fromConfig = (base: string) => configDtype(configs.config, base);
  const defaulted = options.dtype === undefined && fromConfig('model') === undefined && fromConfig('decoder_model_merged') === undefined;
  const candidates = dtypeCandidates((base) => options.dtype ?? fromConfig(base) ?? 'fp32');
  const unknown = candidates.find(({ dtype }) => !isDtype(dtype));
  if (unknown) {
    throw new ModelLoadError(
      `${where}/config.json: transformers.js_config.dtype "${unknown.dtype}" is not a dtype this engine knows ` +
        `(${DTYPES.join(', ')}); ${describeOnnxFiles(files)}; pass dtype to choose one`,
    );
  }
  const chosenBy = options.dtype !== undefined ? 'as asked' : defaulted ? 'the default' : "from config.json's transformers.js_config";
  const found = candidates.find(({ path }) => present.has(path));
  const notGenai = genaiMissing === undefined ? '' : ` (genai_config.json's ${genaiMissing} is not there)`;
  if (found) return plan(found.path, found.dtype as Dtype, 'dtype', `dtype "${found.dtype}", ${chosenBy}${notGenai}`);
  // Repositories of one dtype (onnx-community's *-q4f16, *-onnx-web) often do not say it in
  // config.json, where transformers.js then fails on the missing fp32 file: there is nothing to choose.
  const only = dtypesPresent(files.filter((path) => path.endsWith('.onnx')));
  if (defaulted && only.length === 1) {
    const [{ dtype, paths }] = only;
    return plan(paths[0], dtype, 'dtype', `dtype "${dtype}", the only one there${notGenai}`);
  }
  const [first, ...rest] = candidates.map(({ path }) => path);
  const genaiToo =
    genaiMissing === undefined ? '' : `, and the ${genaiMissing} that genai_config.json names (model.decoder.filename) is not there either`;
  throw new ModelLoadError(
    `${where}/${first} not found (${options.dtype !== undefined ? 'dtype' : defaulted ? 'default dtype' : 'config.json dtype'} ` +
      `"${candidates[0].dtype}"; nor ${rest.join(', ')})${genaiToo}: ${describeOnnxFiles(files)}` +
      (options.dtype === undefined ? '; pass dtype or modelFile to choose one' : ''),
  );
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
    config: await readJsonObject(join(dir, 'config.json')),
    generation: await readJsonObject(join(dir, 'generation_config.json')),
    genai: await readJsonObject(join(dir, 'genai_config.json')),
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

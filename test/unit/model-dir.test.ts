import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir, parseModelConfig, planModelFiles, type JsonObject } from '../../src/engine/model-dir.js';
import { ModelLoadError } from '../../src/errors.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';

const TOKENIZER = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

function planError(...args: Parameters<typeof planModelFiles>): string {
  try {
    planModelFiles(...args);
  } catch (error) {
    expect(ModelLoadError.isInstance(error)).toBe(true);
    return (error as Error).message;
  }
  throw new Error('planModelFiles did not throw');
}

describe('planModelFiles', () => {
  const llama: JsonObject = { model_type: 'llama', num_hidden_layers: 2, vocab_size: 10 };

  describe("Xenova's decoder_model_merged exports (TinyLlama-1.1B-Chat)", () => {
    const paths = [
      'config.json',
      'generation_config.json',
      ...TOKENIZER,
      'onnx/decoder_model_merged.onnx',
      'onnx/decoder_model_merged.onnx_data',
      'onnx/decoder_model_merged_quantized.onnx',
      'onnx/decoder_model_merged_fp16.onnx',
    ];

    it('loads decoder_model_merged.onnx with its data for the default fp32', () => {
      expect(planModelFiles(paths, { config: llama })).toEqual({
        onnx: 'onnx/decoder_model_merged.onnx',
        externalData: ['onnx/decoder_model_merged.onnx_data'],
        dtype: 'fp32',
        source: 'dtype',
        reason: 'dtype "fp32", the default',
      });
    });

    it('finds decoder_model_merged_quantized.onnx for q8', () => {
      expect(planModelFiles(paths, { config: llama }, { dtype: 'q8' })).toMatchObject({
        onnx: 'onnx/decoder_model_merged_quantized.onnx',
        externalData: [],
        dtype: 'q8',
      });
    });

    it('prefers onnx/model.onnx, then ./model.onnx, over decoder_model_merged', () => {
      expect(planModelFiles([...paths, 'model.onnx'], { config: llama }).onnx).toBe('model.onnx');
      expect(planModelFiles([...paths, 'model.onnx', 'onnx/model.onnx'], { config: llama }).onnx).toBe('onnx/model.onnx');
    });
  });

  describe('onnxruntime-genai folders (microsoft/*-onnx)', () => {
    const name = 'phi-3.5-mini-instruct-cpu-int4-awq-block-128-acc-level-4.onnx';
    const genai: JsonObject = { model: { type: 'phi3', decoder: { filename: name } } };
    const paths = ['genai_config.json', 'config.json', ...TOKENIZER, name, `${name}.data`];

    it('loads the file genai_config.json names, with its .onnx.data', () => {
      expect(planModelFiles(paths, { genai })).toEqual({
        onnx: name,
        externalData: [`${name}.data`],
        dtype: null,
        source: 'genai_config.json',
        reason: "genai_config.json's model.decoder.filename",
      });
    });

    it('lets an explicit dtype choose by transformers.js names instead', () => {
      const message = planError(paths, { genai }, { dtype: 'fp32' }, 'models/phi');
      expect(message).toMatch(
        /^models\/phi\/onnx\/model\.onnx not found \(dtype "fp32"; nor model\.onnx, onnx\/decoder_model_merged\.onnx/,
      );
      expect(message).toContain(`no file named by a dtype; other ONNX files: ${name}`);
    });

    it('names genai_config.json and lists the ONNX files when it names no file', () => {
      const message = planError(paths, { genai: { model: { decoder: {} } } }, {}, 'models/phi');
      expect(message).toBe(
        `models/phi/genai_config.json has no \`model.decoder.filename\`: no file named by a dtype; other ONNX files: ${name}; ` +
          'pass dtype or modelFile to choose one',
      );
    });

    it('names genai_config.json and the dtype files when neither is there', () => {
      const paths = [...TOKENIZER, 'genai_config.json', 'onnx/model_q4.onnx', 'onnx/model_fp16.onnx'];
      expect(planError(paths, { genai }, {}, 'models/phi')).toBe(
        'models/phi/onnx/model.onnx not found (default dtype "fp32"; nor model.onnx, onnx/decoder_model_merged.onnx, decoder_model_merged.onnx), ' +
          `and the ${name} that genai_config.json names (model.decoder.filename) is not there either: ` +
          'dtypes present: fp16 (onnx/model_fp16.onnx), q4 (onnx/model_q4.onnx); pass dtype or modelFile to choose one',
      );
    });
  });

  describe("transformers.js repositories that ship the builder's genai_config.json (onnx-community/Llama-3.2-1B-Instruct-q4f16)", () => {
    const paths = ['config.json', 'genai_config.json', 'generation_config.json', ...TOKENIZER, 'onnx/model_q4f16.onnx'];

    it('find the file genai_config.json names under onnx/', () => {
      const genai = { model: { decoder: { filename: 'model_q4f16.onnx' } } };
      expect(planModelFiles(paths, { config: llama, genai })).toMatchObject({ onnx: 'onnx/model_q4f16.onnx', source: 'genai_config.json' });
    });

    it("fall back on the dtype's names when genai_config.json names a file that is not there", () => {
      const genai = { model: { decoder: { filename: 'model.onnx' } } };
      expect(planModelFiles(paths, { config: llama, genai })).toEqual({
        onnx: 'onnx/model_q4f16.onnx',
        externalData: [],
        dtype: 'q4f16',
        source: 'dtype',
        reason: `dtype "q4f16", the only one there (genai_config.json's model.onnx is not there)`,
      });
      expect(planModelFiles([...paths, 'onnx/model.onnx'], { config: llama, genai }).onnx).toBe('onnx/model.onnx');
    });
  });

  describe("config.json's transformers.js_config.dtype (q4f16-only repositories)", () => {
    const paths = [
      'config.json',
      ...TOKENIZER,
      'onnx/model_q4f16.onnx',
      'onnx/model_q4f16.onnx_data_10',
      'onnx/model_q4f16.onnx_data',
      'onnx/model_q4f16.onnx_data_2',
    ];

    it('is the default dtype, with the chunked data files in order', () => {
      expect(planModelFiles(paths, { config: { ...llama, 'transformers.js_config': { dtype: 'q4f16' } } })).toEqual({
        onnx: 'onnx/model_q4f16.onnx',
        externalData: ['onnx/model_q4f16.onnx_data', 'onnx/model_q4f16.onnx_data_2', 'onnx/model_q4f16.onnx_data_10'],
        dtype: 'q4f16',
        source: 'dtype',
        reason: `dtype "q4f16", from config.json's transformers.js_config`,
      });
    });

    it('may be a map per file and be overridden for the CPU, as transformers.js reads it', () => {
      const perFile = { ...llama, 'transformers.js_config': { dtype: { model: 'q4f16', embed_tokens: 'fp16' } } };
      expect(planModelFiles(paths, { config: perFile }).dtype).toBe('q4f16');
      const cpu = { ...llama, 'transformers.js_config': { dtype: 'fp16', device_config: { cpu: { dtype: 'q4f16' } } } };
      expect(planModelFiles(paths, { config: cpu }).dtype).toBe('q4f16');
    });

    it('without it the one dtype there is chosen, as the default fp32 file is missing', () => {
      expect(planModelFiles(paths, { config: llama })).toMatchObject({
        onnx: 'onnx/model_q4f16.onnx',
        reason: 'dtype "q4f16", the only one there',
      });
    });

    it('without it, of two dtypes and no fp32 file, none is chosen and the message lists them', () => {
      expect(planError([...paths, 'onnx/model_q4.onnx'], { config: llama }, {}, 'm')).toBe(
        'm/onnx/model.onnx not found (default dtype "fp32"; nor model.onnx, onnx/decoder_model_merged.onnx, decoder_model_merged.onnx): ' +
          'dtypes present: q4 (onnx/model_q4.onnx), q4f16 (onnx/model_q4f16.onnx); pass dtype or modelFile to choose one',
      );
    });

    it('an asked dtype that is not there is not replaced by the one that is', () => {
      expect(planError(paths, { config: llama }, { dtype: 'q4' }, 'm')).toMatch(
        /^m\/onnx\/model_q4\.onnx not found \(dtype "q4"; .*q4f16 \(onnx\/model_q4f16\.onnx\)$/,
      );
    });

    it('an unknown dtype there names config.json and lists what is present', () => {
      const message = planError(paths, { config: { ...llama, 'transformers.js_config': { dtype: 'q3' } } }, {}, 'm');
      expect(message).toMatch(
        /^m\/config\.json: transformers\.js_config\.dtype "q3" is not a dtype this engine knows \(fp32, fp16, q8, .*q1f16\)/,
      );
      expect(message).toContain('dtypes present: q4f16 (onnx/model_q4f16.onnx); pass dtype to choose one');
    });
  });

  it('knows every transformers.js v4 dtype suffix', () => {
    const files = ['q2', 'q2f16', 'q1', 'q1f16', 'int8', 'uint8', 'bnb4'].map((d) => `onnx/model_${d}.onnx`);
    for (const dtype of ['q2', 'q2f16', 'q1', 'q1f16', 'int8', 'uint8', 'bnb4'] as const) {
      expect(planModelFiles(files, {}, { dtype }).onnx).toBe(`onnx/model_${dtype}.onnx`);
    }
  });

  describe('the modelFile option', () => {
    const paths = ['config.json', 'genai_config.json', 'onnx/model.onnx', 'cpu/custom.onnx', 'cpu/custom.onnx.data'];

    it('overrides genai_config.json and the dtypes', () => {
      const genai = { model: { decoder: { filename: 'onnx/model.onnx' } } };
      expect(planModelFiles(paths, { genai }, { modelFile: './cpu\\custom.onnx' })).toEqual({
        onnx: 'cpu/custom.onnx',
        externalData: ['cpu/custom.onnx.data'],
        dtype: null,
        source: 'modelFile',
        reason: 'the modelFile option',
      });
    });

    it('names a missing file and lists what is there', () => {
      expect(planError(paths, {}, { modelFile: 'cpu/other.onnx' }, 'm')).toBe(
        'modelFile cpu/other.onnx not found in m; dtypes present: fp32 (onnx/model.onnx); other ONNX files: cpu/custom.onnx',
      );
    });
  });

  it('says when a folder has no ONNX file at all', () => {
    expect(planError(['config.json', ...TOKENIZER], { config: llama }, { dtype: 'q4' }, 'm')).toMatch(
      /^m\/onnx\/model_q4\.onnx not found \(dtype "q4"; .*\): there is no \.onnx file$/,
    );
  });
});

describe('parseModelConfig', () => {
  const config: JsonObject = {
    model_type: 'phi3',
    num_hidden_layers: 32,
    num_attention_heads: 32,
    hidden_size: 3072,
    vocab_size: 32064,
    max_position_embeddings: 131072,
    eos_token_id: 32000,
  };
  const genai: JsonObject = {
    model: {
      type: 'phi3',
      context_length: 131072,
      eos_token_id: [32007, 32001, 32000],
      vocab_size: 32064,
      decoder: {
        filename: 'model.onnx',
        head_size: 96,
        hidden_size: 3072,
        num_attention_heads: 32,
        num_hidden_layers: 32,
        num_key_value_heads: 32,
      },
    },
    search: { do_sample: true, temperature: 0.7, top_k: 50, top_p: 0.9, repetition_penalty: 1.0, max_length: 131072 },
  };

  describe('eos ids', () => {
    it('come from generation_config.json first', () => {
      expect(parseModelConfig({ config, genai, generation: { eos_token_id: [1, 2] } }).eosTokenIds).toEqual([1, 2]);
    });

    it("come from genai_config.json without it: Phi-3.5 stops on <|end|> (32007), not only config.json's 32000", () => {
      expect(parseModelConfig({ config, genai }).eosTokenIds).toEqual([32007, 32001, 32000]);
    });

    it('come from config.json last, a single id becoming a list', () => {
      expect(parseModelConfig({ config }).eosTokenIds).toEqual([32000]);
      expect(parseModelConfig({ config, generation: { eos_token_id: [] } }).eosTokenIds).toEqual([32000]);
    });

    it('name the file of an id that is not one', () => {
      expect(() => parseModelConfig({ config, generation: { eos_token_id: ['</s>'] } })).toThrow(
        'generation_config.json: `eos_token_id` must be a token id or a list of them, got an array',
      );
    });
  });

  it("reads the shape from genai_config.json's model.decoder when config.json is absent (genai builder output)", () => {
    expect(parseModelConfig({ genai })).toMatchObject({
      modelType: 'phi3',
      vocabSize: 32064,
      maxPositionEmbeddings: 131072,
      numLayers: 32,
      numKvHeads: 32,
      headDim: 96,
    });
  });

  it('takes the shorter context of config.json and genai_config.json, whose rotary caches end there', () => {
    const short = { ...genai, model: { ...(genai.model as JsonObject), context_length: 4096 } };
    expect(parseModelConfig({ config, genai: short }).maxPositionEmbeddings).toBe(4096);
  });

  it('reads the sampling defaults of generation_config.json (Qwen2.5), else those of genai_config.json', () => {
    const qwen = { do_sample: true, temperature: 0.7, top_p: 0.8, top_k: 20, repetition_penalty: 1.05, eos_token_id: [151645, 151643] };
    expect(parseModelConfig({ config, genai, generation: qwen }).generationDefaults).toEqual({
      doSample: true,
      temperature: 0.7,
      topP: 0.8,
      topK: 20,
      repetitionPenalty: 1.05,
    });
    // The builder writes GenerationConfig's defaults too (top_k 50, repetition_penalty 1.0): those are no choice of the authors.
    expect(parseModelConfig({ config, genai }).generationDefaults).toEqual({ doSample: true, temperature: 0.7, topP: 0.9 });
    expect(parseModelConfig({ config, generation: { eos_token_id: 2 } }).generationDefaults).toEqual({});
  });

  it("takes nothing from a greedy genai search: microsoft's Phi-4-mini folder would make every sampled OpenAI request top_k 1", () => {
    const phi4 = { do_sample: false, temperature: 1.0, top_k: 1, top_p: 1.0, repetition_penalty: 1.0, max_length: 131072, num_beams: 1 };
    expect(parseModelConfig({ config, genai: { ...genai, search: phi4 } }).generationDefaults).toEqual({});
    const penalised = { ...phi4, repetition_penalty: 1.1 };
    expect(parseModelConfig({ config, genai: { ...genai, search: penalised } }).generationDefaults).toEqual({ repetitionPenalty: 1.1 });
  });

  it("refuses genai_config.json names for the graph's inputs and outputs other than the ones the engine uses", () => {
    const decoder = (genai.model as { decoder: JsonObject }).decoder;
    const named = (inputs: JsonObject) => ({ ...genai, model: { ...(genai.model as JsonObject), decoder: { ...decoder, inputs } } });
    const builder = {
      input_ids: 'input_ids',
      attention_mask: 'attention_mask',
      past_key_names: 'past_key_values.%d.key',
      past_value_names: 'past_key_values.%d.value',
    };
    expect(parseModelConfig({ genai: named(builder) }).numLayers).toBe(32);
    expect(() => parseModelConfig({ genai: named({ ...builder, past_key_names: 'past_key_%d' }) }, 'models/x')).toThrow(
      'models/x/genai_config.json maps `model.decoder.inputs.past_key_names` to "past_key_%d": this engine feeds and reads only ' +
        "the names onnxruntime-genai's builder writes (past_key_values.%d.key); export the graph with them",
    );
  });

  it('names the file and field of a wrongly typed value', () => {
    expect(() => parseModelConfig({ config, generation: { temperature: '0.7' } })).toThrow(
      'generation_config.json: `temperature` must be a number, got a string',
    );
    expect(() => parseModelConfig({ genai: { ...genai, search: { do_sample: 1 } } })).toThrow(
      'genai_config.json: `search.do_sample` must be a boolean, got a number',
    );
  });

  it('needs config.json or genai_config.json', () => {
    expect(() => parseModelConfig({ generation: {} }, 'models/x')).toThrow(
      'models/x/config.json not found: a model directory needs config.json (transformers) or genai_config.json (onnxruntime-genai)',
    );
  });
});

describe('openModelDir', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'si-model-dir-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('plans, reads the configs and scans the graph of a fixture directory', async () => {
    const dir = await ensureFixtureModel('tiny', { externalData: true });
    const opened = await openModelDir(dir);
    expect(opened.plan).toMatchObject({ onnx: 'onnx/model.onnx', externalData: ['onnx/model.onnx_data'], dtype: 'fp32', source: 'dtype' });
    expect(opened.onnxFile).toBe(join(dir, 'onnx/model.onnx'));
    expect(opened.graph.externalData).toEqual(['model.onnx_data']);
    expect(opened.config.eosTokenIds).toEqual([2]);
  });

  it('refuses a renamed data file: the graph names the old one, so ONNX Runtime would not find it', async () => {
    const dir = join(root, 'renamed');
    await cp(await ensureFixtureModel('tiny', { externalData: true }), dir, { recursive: true });
    await rename(join(dir, 'onnx/model.onnx'), join(dir, 'onnx/decoder_model_merged.onnx'));
    await rename(join(dir, 'onnx/model.onnx_data'), join(dir, 'onnx/decoder_model_merged.onnx_data'));
    await expect(openModelDir(dir)).rejects.toThrow(
      `${join(dir, 'onnx/decoder_model_merged.onnx')} keeps its weights in model.onnx_data, which is not beside it ` +
        '(data files there: decoder_model_merged.onnx_data)',
    );
  });

  it('names a genai_config.json that is not JSON', async () => {
    const dir = join(root, 'broken-genai');
    await cp(await ensureFixtureModel('tiny'), dir, { recursive: true });
    await writeFile(join(dir, 'genai_config.json'), '{"model": ');
    await expect(openModelDir(dir)).rejects.toThrow(`${join(dir, 'genai_config.json')} is not valid JSON`);
  });
});

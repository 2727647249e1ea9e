/**
 * The public types of the core. Every module imports its shared types from here, and `src/index.ts`
 * re-exports them, so a user sees one set of names.
 */
import type { ErrorListener } from './errors.js';
import type { GrammarStats } from './grammar/engine.js';
import type { GrammarSpec } from './grammar/spec.js';

/** Why a sequence stopped, in TGI's words. OpenAI routes map `eos_token` and `stop_sequence` to `stop`. */
export type FinishReason = 'length' | 'eos_token' | 'stop_sequence';

/** TGI's `GenerateParameters` as it arrives on the wire (every field optional, snake_case). */
export interface GenerateParameters {
  best_of?: number | null;
  do_sample?: boolean;
  temperature?: number | null;
  top_k?: number | null;
  top_p?: number | null;
  typical_p?: number | null;
  repetition_penalty?: number | null;
  frequency_penalty?: number | null;
  /** Not TGI's: OpenAI's and vLLM's, subtracted once from every token the generation has used. */
  presence_penalty?: number | null;
  seed?: number | null;
  max_new_tokens?: number | null;
  stop?: string[];
  return_full_text?: boolean | null;
  details?: boolean;
  decoder_input_details?: boolean;
  top_n_tokens?: number | null;
  truncate?: number | null;
  watermark?: boolean;
  grammar?: unknown;
  adapter_id?: string | null;
}

/** TGI's `GenerateRequest`. */
export interface GenerateRequest {
  inputs: string;
  parameters?: GenerateParameters;
  /** An output constraint already read from an OpenAI body (`readOpenAIGrammar`); TGI's own is `parameters.grammar`. */
  grammar?: GrammarSpec;
}

/** One chat message, as OpenAI and chat templates know it. */
export interface ChatMessage {
  role: string;
  content?: string | null | Array<{ type: string; text?: string; [key: string]: unknown }>;
  name?: string;
  tool_calls?: unknown[];
  tool_call_id?: string;
  [key: string]: unknown;
}

/** A chat generation: the messages are rendered with the model's chat template in the engine. */
export interface ChatGenerateRequest {
  messages: ChatMessage[];
  tools?: unknown[];
  /** TGI's `tool_prompt`: the lead of the tool prompt written for templates that know no tools. */
  toolPrompt?: string;
  /** More variables for the chat template (vLLM's `chat_template_kwargs`): `enable_thinking`, `documents`, ... */
  chatTemplateKwargs?: Record<string, unknown>;
  parameters?: GenerateParameters;
  /** An output constraint already read from the body (`readOpenAIGrammar`). */
  grammar?: GrammarSpec;
}

/** Limits the parameter validation enforces (TGI's router options). */
export interface ValidationLimits {
  maxBestOf: number;
  maxStopSequences: number;
  maxTopNTokens: number;
  maxInputTokens: number;
  maxTotalTokens: number;
}

/** Sampling settings of one sequence with every default resolved. */
export interface SamplingParams {
  doSample: boolean;
  /** 1 means off. */
  temperature: number;
  /** 0 means off. */
  topK: number;
  /** 1 means off. */
  topP: number;
  /** 1 means off. */
  typicalP: number;
  /** 1 means off. */
  repetitionPenalty: number;
  /** 0 means off. */
  frequencyPenalty: number;
  /** 0 means off. */
  presencePenalty: number;
  /** Always assigned (random when the request gave none), and reported back. */
  seed: number;
  /** Set by the engine when nobody reads the tokens' logprobs (`GenerateOptions.tokenLogprobs`). */
  skipLogprobs?: boolean;
}

/**
 * A request after parameter validation: every default resolved, a seed assigned. Token-count rules
 * (input length, total budget, truncate) are checked later, where the prompt is tokenized.
 */
export interface ValidatedParameters {
  sampling: SamplingParams;
  /** null: fill the budget up to `maxTotalTokens - inputLength`. */
  maxNewTokens: number | null;
  stop: string[];
  returnFullText: boolean;
  details: boolean;
  decoderInputDetails: boolean;
  topNTokens: number;
  truncate: number | null;
  /** What the output must match (TGI's `grammar`, or an OpenAI route's constraint fields); absent: free text. */
  grammar?: GrammarSpec;
}

/** A generated or prompt token as TGI reports it. */
export interface Token {
  id: number;
  text: string;
  logprob: number;
  special: boolean;
}

/** A prompt token; the first one has no logprob. */
export interface PrefillToken {
  id: number;
  text: string;
  logprob: number | null;
}

/** One streamed token. */
export interface TokenEvent {
  type: 'token';
  /** 1-based position of the token in the generation. */
  index: number;
  token: Token;
  /** The `top_n_tokens` most likely alternatives, when asked for. */
  topTokens?: Token[];
}

/** Timings of a finished request, in milliseconds. */
export interface GenerationTimings {
  queueMs: number;
  /** From the first forward pass to the end. */
  inferenceMs: number;
  /** From the first forward pass to the first token. */
  firstTokenMs: number;
}

/** The last event: the final token, plus the whole result. */
export interface EndEvent extends Omit<TokenEvent, 'type'> {
  type: 'end';
  generatedText: string;
  finishReason: FinishReason;
  generatedTokens: number;
  seed: number;
  inputLength: number;
  /** Prompt tokens with logprobs; empty unless `decoder_input_details`. */
  prefill: PrefillToken[];
  /** Every generated token; empty unless `details`. */
  tokens: Token[];
  /** Alternatives for every step; empty unless `details` and `top_n_tokens`. */
  topTokensPerStep: Token[][];
  timings: GenerationTimings;
}

export type GenerationEvent = TokenEvent | EndEvent;

/** Options of one generation call. */
export interface GenerateOptions {
  /** Aborting stops the sequence at the next decode step and frees its place. */
  signal?: AbortSignal;
  /** The caller streams the tokens; some parameters (`decoder_input_details`) are refused then, as TGI does. */
  stream?: boolean;
  /**
   * Whether the caller reads each token's `logprob` (default true: TGI's streams carry it). False
   * spares a greedy row the pass over the whole vocabulary that a logprob costs; `logprob` is then
   * NaN, unless `details` asked for it.
   */
  tokenLogprobs?: boolean;
}

/**
 * What `engine.generate()` returns: iterate it for events. `accepted` settles once the engine has
 * validated and queued the request (before any token), so an HTTP layer can answer 422 before it
 * writes headers; it rejects with the same error the iteration would throw.
 */
export interface Generation extends AsyncIterable<GenerationEvent> {
  readonly accepted: Promise<{ inputLength: number }>;
}

/** How far the download of a model given by Hub id has got (`onProgress`). */
export interface DownloadProgress {
  /** `org/name`. */
  repo: string;
  /** The file being downloaded. */
  file: string;
  /** Bytes in the cache so far, of `totalBytes`: all the files the cache lacked when the load started. */
  downloadedBytes: number;
  totalBytes: number;
  /** Average since the download started. */
  bytesPerSecond: number;
  /** null until there is a rate to go by. */
  etaSeconds: number | null;
  /** The last report: every file is in the cache. */
  done: boolean;
}

/**
 * An ONNX file variant, named as transformers.js v4 names them: `fp32` is `model.onnx`, `q8` is
 * `model_quantized.onnx`, the others `model_{dtype}.onnx`.
 */
export type Dtype = 'fp32' | 'fp16' | 'q8' | 'int8' | 'uint8' | 'q4' | 'q4f16' | 'bnb4' | 'q2' | 'q2f16' | 'q1' | 'q1f16';

/**
 * Options of `createEngine`. They are checked when given (a `TypeError` or `RangeError`, before any
 * model loads); defaults that depend on the model are filled in at load.
 */
export interface EngineOptions {
  /**
   * A model directory in the Hugging Face ONNX layout, or a Hub id `org/name`, `org/name/folder` for
   * repositories with one model per folder (`@revision` after either pins a branch, tag or commit):
   * the files the `dtype` needs are downloaded into the Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME`,
   * `HF_TOKEN`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` apply, and `HUGGING_FACE_HUB_TOKEN` and
   * `TRANSFORMERS_OFFLINE` as huggingface_hub reads them) and loaded from there.
   */
  model: string;
  /**
   * Which ONNX file: `onnx/model{suffix}.onnx`, `model{suffix}.onnx`, then the same names with
   * `decoder_model_merged` (Xenova's older exports). Without it: genai_config.json's
   * `model.decoder.filename` if that file is there (beside it or under `onnx/`), else config.json's
   * `transformers.js_config.dtype`, else fp32, else the one dtype the folder has.
   */
  dtype?: Dtype;
  /** The ONNX file to load, relative to the model directory; overrides `dtype` and genai_config.json. */
  modelFile?: string;
  /**
   * Batch graphs whose rows change each other's results (dynamic int8 quantization, `q8` files) as
   * any other: more throughput, but a request's tokens then depend on what runs beside it. Default
   * false: such graphs run one row per forward pass, so every request gets exactly its solo tokens.
   */
  allowBatchVariance?: boolean;
  /** Intra-op threads for ONNX Runtime; default: ONNX Runtime's choice (the physical cores). */
  threads?: number;
  /** Most sequences decoded in one forward pass. */
  maxBatchSize?: number;
  /** Most (padded) prompt tokens in one forward pass; longer prompts are prefilled in chunks. Default 512. */
  maxBatchPrefillTokens?: number;
  /**
   * KV budget of the running batch: the sum over sequences of prompt + max_new_tokens. Default: as
   * many tokens as `maxKvCacheBytes` holds for this model. Not together with `maxKvCacheBytes`.
   */
  maxBatchTotalTokens?: number;
  /** Memory the default `maxBatchTotalTokens` is sized to, in bytes. Default min(4 GiB, a quarter of the machine's memory). */
  maxKvCacheBytes?: number;
  /**
   * Memory for the prompt keys and values kept after their prefill (the prefix cache), in bytes, on
   * top of the batch's: a request whose prompt starts with a cached prefix (a system prompt, a chat's
   * earlier turns) computes only the rest. Least recently used prefixes go first. Default a quarter
   * of the batch's KV memory; 0 turns the cache off. Graphs that take positions from the column
   * index (the `anchored` layout) never reuse a prefix.
   */
  prefixCacheBytes?: number;
  /**
   * Most tokens prompt-lookup speculation proposes per pass while a single stream runs: the tokens
   * that followed an earlier occurrence of its last few tokens in its prompt or output, checked in one
   * forward pass. The tokens are exactly those without it; text that repeats its input (rewriting,
   * extending, quoting) comes faster. 0 turns it off. Default 4.
   */
  speculativeTokens?: number;
  /**
   * The whitespace JSON grammars allow (`response_format`, schemas, tool arguments): `'compact'`
   * (default) writes one line with `", "` and `": "` between items, which takes fewer tokens and
   * keeps a small model from looping on whitespace; `'any'` allows any whitespace between tokens,
   * as vLLM does by default.
   */
  jsonWhitespace?: 'compact' | 'any';
  /** Most prompt tokens per request; default `maxTotalTokens - 1`. */
  maxInputTokens?: number;
  /**
   * Most prompt + generated tokens per request. Default: the model's context length, at most 4096
   * (as TGI), and at most what `maxBatchTotalTokens` holds.
   */
  maxTotalTokens?: number;
  maxStopSequences?: number;
  maxTopNTokens?: number;
  maxBestOf?: number;
  /** The name reported as `model_id`; default the Hub id, or the directory's base name. */
  modelId?: string;
  /** Called while a model given by Hub id downloads (at most ten times a second, and once when done). */
  onProgress?: (progress: DownloadProgress) => void;
  /**
   * Sees each unexpected error of the engine once: its worker dying (`phase: 'worker'`), failing to
   * restart (`'restart'`: the engine then answers 500 for good), a failed forward pass (`'generation'`).
   * Default: one line on stderr. A failed load rejects `createEngine` instead.
   */
  onError?: ErrorListener;
}

/** Sampling defaults from the model's `generation_config.json`; absent fields were not in it. */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  doSample?: boolean;
}

/** What the engine knows of its model, for `/info` and `/v1/models`. */
export interface ModelInfo {
  modelId: string;
  modelDir: string;
  onnxFile: string;
  /** Why that file: `dtype "q4", as asked`, `genai_config.json's model.decoder.filename`, ... (`check` prints it). */
  onnxFileReason: string;
  modelType: string;
  vocabSize: number;
  maxPositionEmbeddings: number;
  eosTokenIds: number[];
  kvDtype: 'float32' | 'float16';
  /** The graph's attention family and the cache layout the engine chose for it (README: "Using a real model"). */
  attention: {
    family: 'position-ids' | 'mask-positions' | 'column-positions' | 'group-query' | 'multi-head';
    layout: 'left' | 'anchored' | 'right';
    /** Why rows of one pass would change each other's tokens (then one row per pass, unless `allowBatchVariance`), or null. */
    rowCoupling: string | null;
    /** Decode passes write new keys into a pre-allocated cache instead of copying it (GroupQueryAttention's shared buffer). */
    inPlace: boolean;
  };
  /** The ONNX graph as read from the file: inputs, outputs, node counts per operator, external data files. */
  graph: { inputs: string[]; outputs: string[]; opTypes: Record<string, number>; externalData: string[] };
  /** KV-cache bytes one token of one sequence holds. */
  kvBytesPerToken: number;
  hasChatTemplate: boolean;
  /** The OpenAI routes apply these to the fields a request leaves unset (unless `generationConfig: 'none'`). */
  generationDefaults?: GenerationDefaults;
  limits: ValidationLimits;
  maxBatchSize: number;
  maxBatchPrefillTokens: number;
  maxBatchTotalTokens: number;
  /** The prefix cache's memory budget in bytes; 0 when it is off (by option, or for the `anchored` layout). Absent for a remote engine. */
  prefixCacheBytes?: number;
}

/** The fields of `ModelInfo` that only a local ONNX model has: its files, its graph and its cache. */
export type OnnxModelField = 'modelDir' | 'onnxFile' | 'onnxFileReason' | 'kvDtype' | 'attention' | 'graph' | 'kvBytesPerToken';

/**
 * What any engine tells of its model (`engine.info`): all of `ModelInfo` for a local engine; a
 * remote engine's model lives on other servers, so the ONNX fields are absent there.
 */
export type EngineInfo = Omit<ModelInfo, OnnxModelField> & Partial<Pick<ModelInfo, OnnxModelField>>;

/** Live counters of the scheduler. */
export interface EngineStats {
  queueSize: number;
  batchSize: number;
  /** Token reservation of the running batch. */
  batchReservedTokens: number;
  healthy: boolean;
  /** The worker's JavaScript heap plus its external memory (KV-cache buffers), in bytes. */
  workerMemoryBytes: number;
  /**
   * Requests that reused a cached prompt prefix, and the prompt tokens they did not recompute, since
   * the worker started (a restarted worker starts with an empty cache). Absent without a prefix cache.
   */
  prefixCacheHits?: number;
  prefixCacheTokens?: number;
  /** Bytes the prefix cache holds now. */
  prefixCacheBytes?: number;
  /** Tokens prompt-lookup speculation proposed, and those the model confirmed, since the worker started. Absent when it is off. */
  speculativeProposedTokens?: number;
  speculativeAcceptedTokens?: number;
  /** The grammar engine's counters since the worker started; absent until a request first used a grammar. */
  grammar?: GrammarStats;
}

/** One forward pass of the engine, for the batch metrics (TGI's `tgi_batch_*`). */
export interface ForwardPassRecord {
  method: 'prefill' | 'decode';
  /** Sequences in the pass. */
  rows: number;
  seconds: number;
  ok: boolean;
}

/** A token of `/tokenize`: character offsets into the input. */
export interface TokenizedToken {
  id: number;
  text: string;
  start: number;
  stop: number;
}

/** Options of `engine.close()`. */
export interface CloseOptions {
  /** Let running generations finish for up to this long before they are ended with an error. Default 0. */
  drainTimeoutMs?: number;
}

/** The engine as everything above it (HTTP handler, adapters, users) sees it. */
export interface Engine {
  readonly info: EngineInfo;
  /** Generate from a prompt. Errors (validation, cancellation, failures) are thrown from `accepted` and from the iteration. */
  generate(request: GenerateRequest, options?: GenerateOptions): Generation;
  /** Generate from chat messages rendered with the model's chat template. */
  chat(request: ChatGenerateRequest, options?: GenerateOptions): Generation;
  /** Render chat messages to the prompt text the model sees. */
  applyChatTemplate(messages: ChatMessage[], options?: { tools?: unknown[]; addGenerationPrompt?: boolean }): Promise<string>;
  tokenize(text: string): Promise<TokenizedToken[]>;
  stats(): EngineStats;
  /** Calls `listener` after every forward pass; returns the function that unsubscribes. */
  onForwardPass(listener: (pass: ForwardPassRecord) => void): () => void;
  /** True when the model serves: after a failed forward pass it runs a one-token probe, as TGI's health check does. */
  health(): Promise<boolean>;
  close(options?: CloseOptions): Promise<void>;
}

/**
 * The engine's worker thread. ONNX Runtime's `run()` blocks the thread that calls it for a whole
 * forward pass, so the session, tokenizer, KV cache and generation loop all live here and the host's
 * event loop only exchanges messages with it.
 */
// First: onnxruntime must not see Float16Array (float16-off.ts says why).
import './float16-off.js';
import { readFile } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { basename, join } from 'node:path';
import { InferenceError, ModelLoadError, TemplateError, serializeError } from '../errors.js';
import { createGrammarEngine, type GrammarEngine, type GrammarStats, type RowMatcher } from '../grammar/index.js';
import { checkTokenBudget, inputsTooLong } from '../params.js';
import { ChatTemplate } from '../text/chat-template.js';
import { TOOL_CALL_FORMAT_TEXTS } from '../text/tool-messages.js';
import { countBeyond, loadTokenizer, type TextTokenizer } from '../text/tokenizer.js';
import type { EngineStats, ModelInfo, TokenizedToken } from '../types.js';
import { kvBytesPerToken, resolveConfig } from './config.js';
import { GenerationLoop } from './generation-loop.js';
import type { FromWorker, Prompt, ToWorker, WorkerInit } from './messages.js';
import { openModelDir } from './model-dir.js';
import { rowCoupling } from './attention-family.js';
import { ModelSession } from './model-session.js';
import { PrefixCache } from './prefix-cache.js';
import { Sequence, type SequenceContext } from './sequence.js';

const port = parentPort!;
const post = (message: FromWorker) => port.postMessage(message);

interface Loaded {
  info: ModelInfo;
  tokenizer: TextTokenizer;
  template: ChatTemplate | null;
  model: ModelSession;
  loop: GenerationLoop;
  ctx: SequenceContext;
  /** Made on the first request with a grammar (loading xgrammar costs a few hundred milliseconds). */
  grammars: Promise<GrammarEngine> | null;
  jsonWhitespace: 'compact' | 'any';
  /** Requests whose grammar is being compiled, and whether they were cancelled meanwhile. */
  compiling: Map<number, { cancelled: boolean }>;
  stats: StatsRelay;
}

type StatsRelay = ReturnType<typeof statsRelay>;

/**
 * Adds the grammar engine's counters to the loop's messages that carry stats (one per pass). What
 * changes between passes (a 422, a cancel before the first pass, a row released after its last
 * token went out) is sent when the turn is over, in a 'stats' message, and only if it changed, so
 * that the host's figures are right once the worker is idle.
 */
function statsRelay(loopStats: () => EngineStats) {
  let grammars: GrammarEngine | null = null;
  let sent: GrammarStats | null = null;
  let scheduled = false;
  const withGrammar = (stats: EngineStats): EngineStats => {
    if (!grammars) return stats;
    sent = grammars.stats();
    return { ...stats, grammar: sent };
  };
  const unchanged = (now: GrammarStats): boolean =>
    sent !== null &&
    (Object.keys(now) as Array<keyof GrammarStats>).every((key) => typeof now[key] !== 'number' || now[key] === sent![key]);
  const flush = (): void => {
    if (grammars && !unchanged(grammars.stats())) post({ type: 'stats', stats: withGrammar(loopStats()) });
  };
  const settle = (): void => {
    if (!grammars || scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      flush();
    });
  };
  return {
    attach(engine: GrammarEngine): void {
      grammars = engine;
    },
    /** The loop's `post`. */
    post(message: FromWorker): void {
      post(message.type === 'step' || message.type === 'failed' ? { ...message, stats: withGrammar(message.stats) } : message);
      settle();
    },
    settle,
    /** Sends what changed now, e.g. before a 422 so that the refusal is counted by the time its client sees it. */
    flush,
  };
}

async function load({ options }: WorkerInit): Promise<Loaded> {
  const dir = options.model;
  // The options were checked on the main thread (checkEngineOptions); what depends on the model is resolved here.
  const { config, plan, onnxFile, graph } = await openModelDir(dir, options);
  const tokenizer = await loadTokenizer(dir, { textTokens: TOOL_CALL_FORMAT_TEXTS });
  const model = await ModelSession.load(onnxFile, config, new Set(Object.keys(graph.opTypes)), options.threads);
  const resolved = resolveConfig(options, config, model);
  const { family, layout, maxRows, inPlace } = model.attention;
  // Rows that would change each other's tokens run one per pass unless the host accepts that.
  const coupling = rowCoupling(new Set(Object.keys(graph.opTypes)));
  const rowsPerPass = coupling && !options.allowBatchVariance ? 1 : maxRows;
  if (rowsPerPass !== null) resolved.maxBatchSize = Math.min(resolved.maxBatchSize, rowsPerPass);
  // The same coupling spans a speculative pass's tokens: they would not be those of single steps.
  if (coupling) resolved.speculativeTokens = 0;
  // Keys cached at one column are only right at that column: the anchored layout cannot reuse them.
  if (layout === 'anchored') resolved.prefixCacheBytes = 0;
  const info: ModelInfo = {
    modelId: options.modelId ?? basename(dir),
    modelDir: dir,
    onnxFile,
    onnxFileReason: plan.reason,
    modelType: config.modelType,
    vocabSize: config.vocabSize,
    maxPositionEmbeddings: config.maxPositionEmbeddings,
    eosTokenIds: config.eosTokenIds,
    kvDtype: model.kvDtype,
    attention: { family, layout, rowCoupling: coupling, inPlace: inPlace ?? false },
    graph: { inputs: graph.inputs, outputs: graph.outputs, opTypes: graph.opTypes, externalData: graph.externalData },
    kvBytesPerToken: kvBytesPerToken(model),
    generationDefaults: config.generationDefaults,
    hasChatTemplate: false,
    ...resolved,
  };
  const template = await ChatTemplate.load(dir, tokenizer.config);
  info.hasChatTemplate = template !== null;
  const prefixCache =
    resolved.prefixCacheBytes > 0
      ? new PrefixCache(resolved.prefixCacheBytes, {
          tensors: model.numLayers * 2,
          heads: model.kvHeads,
          dim: model.headDim,
          dtype: model.kvDtype,
        })
      : null;
  const stats = statsRelay(() => loop.stats());
  const loop = new GenerationLoop(model, resolved, resolved.limits.maxTotalTokens, stats.post, prefixCache);
  return {
    info,
    tokenizer,
    template,
    model,
    loop,
    ctx: { tokenizer, eosTokenIds: new Set(config.eosTokenIds) },
    grammars: null,
    jsonWhitespace: options.jsonWhitespace ?? 'compact',
    compiling: new Map(),
    stats,
  };
}

function render(engine: Loaded, chat: Extract<Prompt, { messages: unknown }>, addGenerationPrompt = true): string {
  if (!engine.template) throw new TemplateError('the model has no chat_template in tokenizer_config.json');
  const { messages, tools, toolPrompt, chatTemplateKwargs: kwargs } = chat;
  return engine.template.render({ messages, tools, toolPrompt, kwargs, addGenerationPrompt });
}

async function submit(engine: Loaded, message: Extract<ToWorker, { type: 'submit' }>): Promise<void> {
  const { id, prompt, params } = message;
  const receivedAt = performance.now();
  let grammar: RowMatcher | undefined;
  try {
    const { limits } = engine.info;
    // A rendered chat already holds its special tokens, as transformers' apply_chat_template has it.
    const chat = !('text' in prompt);
    const text = chat ? render(engine, prompt) : prompt.text;
    // Without truncate, a prompt far over the context is refused before it is tokenized in full.
    const beyond = params.truncate === null ? countBeyond(engine.tokenizer, text, limits.maxTotalTokens) : null;
    if (beyond !== null) checkTokenBudget(beyond, params, limits);
    const ids = engine.tokenizer.encode(text, { addSpecialTokens: !chat });
    const { maxNewTokens, dropLeading } = checkTokenBudget(ids.length, params, limits);
    const promptIds = ids.slice(dropLeading);
    if (params.grammar) {
      // Compiled before 'accepted', so that a grammar xgrammar refuses is a 422 before the first byte.
      const pending = { cancelled: false };
      engine.compiling.set(id, pending);
      try {
        grammar = await (await grammarEngine(engine)).createMatcher(params.grammar);
      } finally {
        engine.compiling.delete(id);
      }
      if (pending.cancelled) {
        grammar.release();
        return engine.stats.settle();
      }
    }
    post({ type: 'accepted', id, inputLength: promptIds.length });
    engine.loop.submit(new Sequence(id, promptIds, params, maxNewTokens, engine.ctx, receivedAt, grammar));
  } catch (error) {
    grammar?.release();
    engine.stats.flush();
    post({ type: 'rejected', id, error: serializeError(error) });
  }
}

/** The model's grammar engine: its vocabulary is tokenizer.json's, its rows as wide as the logits. */
function grammarEngine(engine: Loaded): Promise<GrammarEngine> {
  if (!engine.grammars) {
    const loading = (async () => {
      const tokenizerJson = JSON.parse(await readFile(join(engine.info.modelDir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
      const grammars = await createGrammarEngine({
        tokenizerJson,
        vocabSize: engine.info.vocabSize,
        stopTokenIds: engine.info.eosTokenIds,
        whitespace: engine.jsonWhitespace,
        formatTexts: TOOL_CALL_FORMAT_TEXTS,
      });
      engine.stats.attach(grammars);
      return grammars;
    })();
    // A failed load is not kept: the next request with a grammar tries again.
    loading.catch(() => (engine.grammars = null));
    engine.grammars = loading;
  }
  return engine.grammars;
}

/** `/tokenize` serves texts that fit the context; longer ones would only hold up the streams. */
function tokenize(engine: Loaded, text: string): TokenizedToken[] {
  const max = engine.info.limits.maxTotalTokens;
  const beyond = countBeyond(engine.tokenizer, text, max);
  const tokens = beyond === null ? engine.tokenizer.tokenizeWithOffsets(text) : null;
  if (tokens === null || tokens.length > max) {
    throw inputsTooLong(max, tokens?.length ?? beyond ?? 0);
  }
  return tokens;
}

function call(engine: Loaded, message: Extract<ToWorker, { type: 'call' }>): void {
  try {
    const result = message.method === 'tokenize' ? tokenize(engine, message.text) : render(engine, message, message.addGenerationPrompt);
    post({ type: 'reply', callId: message.callId, result });
  } catch (error) {
    post({ type: 'reply', callId: message.callId, error: serializeError(error) });
  }
}

async function main(): Promise<void> {
  let engine: Loaded;
  try {
    engine = await load(workerData as WorkerInit);
  } catch (error) {
    const failure = InferenceError.isInstance(error)
      ? error
      : new ModelLoadError(error instanceof Error ? error.message : String(error), error);
    post({ type: 'fatal', error: serializeError(failure) });
    return;
  }
  const running = engine.loop.run();
  // The loop guards its own steps, so its failure is a bug that leaves nothing to serve the requests:
  // the thread ends with it as an uncaught exception, which the engine reports and replaces the worker
  // for, whatever the host's --unhandled-rejections mode.
  running.catch((error: unknown) =>
    setImmediate(() => {
      throw error;
    }),
  );
  port.on('message', (message: ToWorker) => {
    switch (message.type) {
      case 'submit':
        return void submit(engine, message);
      case 'cancel': {
        const compiling = engine.compiling.get(message.id);
        if (compiling) compiling.cancelled = true;
        engine.loop.cancel(message.id);
        // A queued row is released at once, with no pass to tell of it.
        return engine.stats.settle();
      }
      case 'call':
        return call(engine, message);
      case 'close':
        // Release the session only after the pass in progress has returned.
        engine.loop.stop();
        void running.then(() => engine.model.release()).finally(() => port.close());
    }
  });
  post({ type: 'ready', info: engine.info });
}

void main();

/**
 * `streaming-inference check --model DIR`: what the engine makes of a model directory, and whether
 * batching gives every request the tokens it gets alone on this very model. A user who downloads a
 * model runs this first.
 */
import { stat } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { createEngine } from './engine/engine.js';
import { FAMILY_NOTES } from './engine/attention-family.js';
import type { Engine, EngineInfo, EngineOptions, GenerationDefaults, GenerationEvent, ModelInfo } from './types.js';

/** Prompts of different lengths, so the batched rows are padded and join at different steps. */
const PROMPTS = [
  'The capital of France is',
  'Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who',
  'def fibonacci(n):',
];

export interface CheckReport {
  info: ModelInfo;
  /** Per prompt: the first step at which batched tokens differ from alone, or null. */
  mismatches: (number | null)[];
  /**
   * True when every prompt gives its solo tokens, or differs only where its two best tokens alone
   * were a near-tie and its logprobs agreed up to there, within `roundingTolerance`.
   */
  ok: boolean;
}

/**
 * How far a logprob may move, and how close two tokens may lie and still swap, for the difference to
 * be taken for the kernels' rounding at another batch shape rather than a wrong cache layout, which
 * moves logprobs by 0.2 to 0.3 from the first token on (a left-padded row of a GroupQueryAttention
 * export, measured). float32 kernels move them by about 1e-6. onnxruntime 1.30's 4-bit MatMulNBits
 * takes a path of its own for a pass of one row and one token (0.14 logits from the same row in a
 * batch of two, on the bench's q4 fixture), and float16 and int8 arithmetic round coarsely: on that
 * 30-layer fixture, a lone row and the same row in a batch drift apart by up to 0.08 in logprob.
 */
export function roundingTolerance(info: ModelInfo): number {
  const ops = Object.keys(info.graph.opTypes).join(' ');
  const lowPrecision = info.kvDtype === 'float16' || /MatMulNBits|DynamicQuantizeLinear|MatMulInteger/.test(ops);
  return lowPrecision ? 0.1 : 1e-4;
}

/** One greedy generation: its tokens, their logprobs, and the margin to the runner-up at each step. */
export interface GreedyRun {
  ids: number[];
  logprobs: number[];
  margins: number[];
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

async function fileSize(file: string): Promise<string> {
  return stat(file).then(
    (s) => mib(s.size),
    () => 'missing',
  );
}

/** One greedy generation; `onToken` sees each token as it arrives. */
async function greedy(engine: Engine, prompt: string, tokens: number, onToken?: (index: number) => void): Promise<GreedyRun> {
  const run: GreedyRun = { ids: [], logprobs: [], margins: [] };
  const generation = engine.generate({ inputs: prompt, parameters: { max_new_tokens: tokens, do_sample: false, top_n_tokens: 2 } });
  for await (const event of generation as AsyncIterable<GenerationEvent>) {
    run.ids.push(event.token.id);
    run.logprobs.push(event.token.logprob);
    const [best, second] = event.topTokens ?? [];
    run.margins.push(best && second ? best.logprob - second.logprob : Infinity);
    onToken?.(run.ids.length);
  }
  return run;
}

/** Starts prompt i + 1 once prompt i has produced 2 + i tokens, so rows join a running batch at different steps. */
async function together(engine: Engine, tokens: number): Promise<GreedyRun[]> {
  const results: Promise<GreedyRun>[] = [];
  const started = PROMPTS.map(() => {
    let go!: () => void;
    const promise = new Promise<void>((resolve) => (go = resolve));
    return { promise, go };
  });
  PROMPTS.forEach((prompt, i) => {
    results.push(started[i].promise.then(() => greedy(engine, prompt, tokens, (n) => n === 2 + i && started[i + 1]?.go())));
  });
  started[0].go();
  // A prompt that ends before its successor's start signal must not leave it waiting.
  return Promise.all(results.map((r, i) => r.finally(() => started[i + 1]?.go())));
}

function firstDifference(a: number[], b: number[]): number | null {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return null;
}

/** The largest logprob difference over the steps where both runs chose the same tokens. */
function drift(a: GreedyRun, b: GreedyRun): number {
  const same = firstDifference(a.ids, b.ids) ?? Math.min(a.ids.length, b.ids.length);
  return Math.max(0, ...a.logprobs.slice(0, same).map((lp, i) => Math.abs(lp - b.logprobs[i])));
}

/** The self-test's line for one prompt, and whether its difference (if any) is within the kernels' rounding. */
export function compareRuns(
  alone: GreedyRun,
  batched: GreedyRun,
  tolerance: number,
): { at: number | null; rounding: boolean; line: string } {
  const at = firstDifference(alone.ids, batched.ids);
  if (at === null) return { at, rounding: true, line: 'same tokens' };
  const before = drift(alone, batched);
  const margin = alone.margins[at] ?? Infinity;
  const rounding = margin <= tolerance && before <= tolerance;
  const differs = `from token ${at} (alone ${alone.ids[at]}, batched ${batched.ids[at]}): the two best were ${margin.toFixed(4)} apart alone, logprobs agreed to ${before.toFixed(4)} before`;
  return { at, rounding, line: rounding ? `a near-tie flipped ${differs}` : `DIFFERS ${differs}` };
}

/** The sampling defaults as the request fields they fill in. */
function describeDefaults(defaults: GenerationDefaults): string {
  const fields: Array<[keyof GenerationDefaults, string]> = [
    ['doSample', 'do_sample'],
    ['temperature', 'temperature'],
    ['topP', 'top_p'],
    ['topK', 'top_k'],
    ['repetitionPenalty', 'repetition_penalty'],
  ];
  return fields
    .filter(([key]) => defaults[key] !== undefined)
    .map(([key, field]) => `${field} ${defaults[key]}`)
    .join(', ');
}

export async function describeModel(info: ModelInfo, print: (line: string) => void): Promise<void> {
  const dir = info.modelDir;
  const onnx = relative(dir, info.onnxFile);
  const data = info.graph.externalData.map((name) => relative(dir, join(dirname(info.onnxFile), name)));
  print(`Model      ${dir} (model_type ${info.modelType})`);
  print(`ONNX file  ${onnx} (${await fileSize(info.onnxFile)})${data.length > 0 ? ` + ${data.join(', ')}` : ''}: ${info.onnxFileReason}`);
  const past = info.graph.inputs.filter((name) => name.startsWith('past_key_values.')).length;
  const inputs = info.graph.inputs.filter((name) => !name.startsWith('past_key_values.'));
  print(`Inputs     ${inputs.join(', ')}, past_key_values.* (${past})`);
  print(`Outputs    ${info.graph.outputs.filter((name) => !name.startsWith('present.')).join(', ')}, present.*`);
  const ops = Object.entries(info.graph.opTypes)
    .filter(([op]) => op.includes('.') || /Attention|MatMul|Quantize|Norm/.test(op))
    .map(([op, n]) => `${op.replace(/^com\.microsoft\./, '')} ×${n}`);
  if (ops.length > 0) print(`Key ops    ${ops.join(', ')}`);
  const inPlace = info.attention.inPlace ? '; decode steps write their keys in place' : '';
  print(`Attention  ${info.attention.family} → ${info.attention.layout} layout: ${FAMILY_NOTES[info.attention.family]}${inPlace}`);
  if (info.attention.rowCoupling !== null) {
    print(
      `Rows       ${info.maxBatchSize === 1 ? 'one per forward pass' : 'batched, so tokens may differ from alone (allowBatchVariance)'}: ` +
        `${info.attention.rowCoupling}`,
    );
  }
  print(
    `KV cache   ${info.kvDtype}, ${info.kvBytesPerToken} bytes per token; budget ${info.maxBatchTotalTokens} tokens (${mib(info.maxBatchTotalTokens * info.kvBytesPerToken)})`,
  );
  const { limits } = info;
  print(
    `Limits     input ≤ ${limits.maxInputTokens}, total ≤ ${limits.maxTotalTokens} tokens; batch ≤ ${info.maxBatchSize} rows, prefill ≤ ${info.maxBatchPrefillTokens} tokens per pass`,
  );
  print(`Stops on   token ids ${info.eosTokenIds.join(', ') || 'none (eos unknown: set it in generation_config.json)'}`);
  const defaults = describeDefaults(info.generationDefaults ?? {});
  if (defaults)
    print(`Sampling   the model's defaults (${defaults}) fill what OpenAI requests leave unset; generationConfig: 'none' turns that off`);
  print(`Chat       ${info.hasChatTemplate ? 'chat template found' : 'no chat template: /v1/chat/completions answers 422'}`);
}

/** `createEngine` loads a local ONNX model, whose info has its files and graph; only a remote engine's lacks them. */
function onnxInfo(info: EngineInfo): ModelInfo {
  const { modelDir, onnxFile, onnxFileReason, kvDtype, attention, graph, kvBytesPerToken } = info;
  if (
    modelDir === undefined ||
    onnxFile === undefined ||
    onnxFileReason === undefined ||
    kvDtype === undefined ||
    !attention ||
    !graph ||
    kvBytesPerToken === undefined
  ) {
    throw new TypeError('check: the engine has no local ONNX model to describe');
  }
  return { ...info, modelDir, onnxFile, onnxFileReason, kvDtype, attention, graph, kvBytesPerToken };
}

/** Loads the model, prints what it found, then runs the batching self-test. */
export async function checkModel(options: EngineOptions, print: (line: string) => void, tokens = 16): Promise<CheckReport> {
  // The self-test isolates batching: without speculation a lone row decodes one token per pass, and
  // without the prefix cache every prompt is prefilled whole, so each token's passes differ between
  // alone and together only by the rows beside them. Both features keep the tokens exact in exact
  // arithmetic (their own tests check that) but change the pass shapes low-precision kernels see.
  const engine = await createEngine({ ...options, speculativeTokens: 0, prefixCacheBytes: 0 });
  try {
    const info = onnxInfo(engine.info);
    await describeModel(info, print);
    const turns = info.maxBatchSize === 1 ? ' (one row per pass: they take turns)' : '';
    print(`Self-test  ${PROMPTS.length} prompts alone, then together with joins${turns} (greedy, ${tokens} tokens each):`);
    const alone: GreedyRun[] = [];
    for (const prompt of PROMPTS) alone.push(await greedy(engine, prompt, tokens));
    const tolerance = roundingTolerance(info);
    const batched = await together(engine, tokens);
    const compared = PROMPTS.map((_, i) => compareRuns(alone[i], batched[i], tolerance));
    compared.forEach(({ line }, i) => print(`           prompt ${i + 1}: ${line}`));
    const mismatches = compared.map(({ at }) => at);
    const ok = compared.every(({ rounding }) => rounding);
    print(
      mismatches.every((at) => at === null)
        ? 'Result     batched equals alone'
        : ok
          ? `Result     batched equals alone up to rounding: only near-ties (< ${tolerance}) flipped, as low-precision kernels round otherwise at another batch shape`
          : 'Result     batched DIFFERS from alone: please report this model',
    );
    return { info, mismatches, ok };
  } finally {
    await engine.close();
  }
}

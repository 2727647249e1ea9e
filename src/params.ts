/**
 * Request parameter validation with TGI's rules, order and messages (protocol.md §1.2), turning the
 * wire `GenerateParameters` into `ValidatedParameters` with every default resolved and a seed assigned.
 *
 * Where we differ from TGI, on purpose (protocol.md "Our decisions" §5):
 * - `top_p` and `typical_p` accept 1.0, meaning off (TGI#2222), and their messages say so.
 * - A field of the wrong JSON type is a ValidationError naming the field (TGI: serde's 422), checked
 *   first, as TGI's deserialization is. `null` counts as absent for every field.
 * - `seed` must be a safe integer (TGI takes any u64): seeds travel as JS numbers.
 * - `watermark: true` is refused: ignoring it would return output the client did not ask for.
 * - `grammar` is read last (TGI checks it after tokenizing); a grammar that xgrammar refuses is a
 *   422 from the worker, before the request is accepted.
 * - The streaming checks and `best_of`'s limits, which TGI runs in its route handlers before
 *   `Validation::validate`, run first here too.
 */
import { ValidationError } from './errors.js';
import type { GrammarSpec } from './grammar/spec.js';
import { checkStopCount, I32_MAX, readBoolean, readNumber, readStop, readString, U32_MAX } from './protocol/json-shape.js';
import { readTgiGrammar } from './protocol/structured-output.js';
import type { GenerateParameters, ValidatedParameters, ValidationLimits } from './types.js';

export interface ValidateOptions {
  /** The response is a token stream: `best_of` ≠ 1 and `decoder_input_details` are then refused. */
  stream: boolean;
  /** Source of the seed when the request has none; default `Math.random`. */
  random?: () => number;
  /**
   * The request's `inputs`, on TGI routes. When this key is present (even as `undefined`), it is
   * type-checked with the parameters and its emptiness is checked at TGI's rule 12 (after
   * `top_n_tokens`, before `truncate`). Chat routes leave it out: their prompt comes from a template.
   */
  inputs?: unknown;
  /** `return_full_text` when the request leaves it out: true on TGI's `POST /`, false elsewhere. */
  returnFullText?: boolean;
  /** A constraint the route read from its own fields (OpenAI's `response_format`, ...); `grammar` must then be absent. */
  grammar?: GrammarSpec;
}

/**
 * Validate TGI's `parameters` (rules 1–13 and 17 of `Validation::validate`) and resolve the defaults.
 * `undefined` or `null` is TGI's "parameters missing" path: `do_sample` true (pure multinomial
 * sampling at temperature 1). When `parameters` is present, an omitted boolean is false.
 *
 * @throws ValidationError ("Input validation error: …", `param` = the field) on the first rule broken.
 * @example
 * validateParameters({ max_new_tokens: 5, top_p: 0.9 }, limits, { stream: true });
 * // { sampling: { doSample: false, topP: 0.9, temperature: 1, …, seed: 5390917263011937 }, maxNewTokens: 5, … }
 */
export function validateParameters(
  parameters: GenerateParameters | null | undefined,
  limits: ValidationLimits,
  options: ValidateOptions,
): ValidatedParameters {
  const checkInputs = Object.prototype.hasOwnProperty.call(options, 'inputs');
  if (checkInputs && typeof options.inputs !== 'string') fail('`inputs` must be a string', 'inputs');
  const missing = parameters === undefined || parameters === null;
  if (!missing && (typeof parameters !== 'object' || Array.isArray(parameters))) {
    fail('`parameters` must be an object', 'parameters');
  }
  const raw = (missing ? {} : parameters) as Record<string, unknown>;
  const readFloat = (name: string) => readNumber(raw, name, {}, 'tgi') ?? null;
  const readInteger = (name: string, min: number, max: number) => readNumber(raw, name, { integer: true, min, max }, 'tgi') ?? null;
  const readFlag = (name: string) => readBoolean(raw, name, name, 'tgi') ?? null;

  // Types first, in the order of TGI's struct, as serde would reject them.
  const bestOf = readInteger('best_of', 0, Number.MAX_SAFE_INTEGER);
  const temperature = readFloat('temperature');
  const repetitionPenalty = readFloat('repetition_penalty');
  const frequencyPenalty = readFloat('frequency_penalty');
  const presencePenalty = readFloat('presence_penalty');
  const topK = readInteger('top_k', -I32_MAX - 1, I32_MAX);
  const topP = readFloat('top_p');
  const typicalP = readFloat('typical_p');
  const doSample = readFlag('do_sample') ?? missing;
  const maxNewTokens = readInteger('max_new_tokens', 0, U32_MAX);
  const returnFullText = readFlag('return_full_text') ?? options.returnFullText ?? false;
  const stop = readStop(raw, 'tgi') ?? [];
  const truncate = readInteger('truncate', 0, Number.MAX_SAFE_INTEGER);
  const watermark = readFlag('watermark') ?? false;
  const details = readFlag('details') ?? false;
  const decoderInputDetails = readFlag('decoder_input_details') ?? false;
  const seed = readInteger('seed', 0, Number.MAX_SAFE_INTEGER);
  const topNTokens = readInteger('top_n_tokens', 0, U32_MAX);
  readString(raw, 'adapter_id', 'adapter_id', 'tgi');

  // best_of 0 behaves like 1, as on TGI's /generate.
  const n = bestOf === null || bestOf === 0 ? 1 : bestOf;
  if (options.stream && n !== 1) fail('`best_of` != 1 is not supported when streaming tokens', 'best_of');
  if (options.stream && decoderInputDetails) {
    fail('`decoder_input_details` == true is not supported when streaming tokens', 'decoder_input_details');
  }
  if (n > 1 && limits.maxBestOf === 1) fail('`best_of` != 1 is not allowed for this endpoint', 'best_of');
  if (n > 1 && n > limits.maxBestOf) fail(`\`best_of\` must be > 0 and <= ${limits.maxBestOf}. Given: ${n}`, 'best_of');

  // 1–11: TGI's Validation::validate. "Sampling" there means any sampling field is present.
  const sampling = doSample || temperature !== null || topK !== null || topP !== null || typicalP !== null;
  if (n > 1 && !sampling) fail('you must use sampling when `best_of` is > 1', 'best_of');
  if (temperature !== null && temperature <= 0) fail('`temperature` must be strictly positive', 'temperature');
  if (repetitionPenalty !== null && repetitionPenalty <= 0) {
    fail('`repetition_penalty` must be strictly positive', 'repetition_penalty');
  }
  if (frequencyPenalty !== null && !(frequencyPenalty >= -2 && frequencyPenalty <= 2)) {
    fail('`frequency_penalty` must be >= -2.0 and <= 2.0', 'frequency_penalty');
  }
  if (presencePenalty !== null && !(presencePenalty >= -2 && presencePenalty <= 2)) {
    fail('`presence_penalty` must be >= -2.0 and <= 2.0', 'presence_penalty');
  }
  if (topP !== null && !(topP > 0 && topP <= 1)) fail('`top_p` must be > 0.0 and <= 1.0', 'top_p');
  if (typicalP !== null && !(typicalP > 0 && typicalP <= 1)) fail('`typical_p` must be > 0.0 and <= 1.0', 'typical_p');
  if (topK !== null && topK <= 0) fail('`top_k` must be strictly positive', 'top_k');
  if (maxNewTokens === 0) fail('`max_new_tokens` must be strictly positive', 'max_new_tokens');
  checkStopCount(stop, limits.maxStopSequences);
  if (seed !== null && n > 1) fail('`seed` must not be set when `best_of` > 1', 'seed');
  if (topNTokens !== null && topNTokens > limits.maxTopNTokens) {
    fail(`\`top_n_tokens\` must be >= 0 and <= ${limits.maxTopNTokens}. Given: ${topNTokens}`, 'top_n_tokens');
  }
  // 12–13; the token-count rules (14–16) follow in checkTokenBudget, once the prompt is tokenized.
  if (checkInputs && options.inputs === '') fail('`inputs` cannot be empty', 'inputs');
  if (truncate !== null && (truncate === 0 || truncate > limits.maxInputTokens)) {
    fail(`\`truncate\` must be strictly positive and less than ${limits.maxInputTokens}. Given: ${truncate}`, 'truncate');
  }
  if (watermark) fail('`watermark` is not supported', 'watermark');
  const tgiGrammar = readTgiGrammar(raw.grammar, 'grammar');
  if (tgiGrammar && options.grammar) fail('only one output constraint may be given; got `grammar` and another', 'grammar');
  const grammar = tgiGrammar ?? options.grammar;

  return {
    sampling: {
      doSample,
      temperature: temperature ?? 1,
      topK: topK ?? 0,
      topP: topP ?? 1,
      typicalP: typicalP ?? 1,
      repetitionPenalty: repetitionPenalty ?? 1,
      frequencyPenalty: frequencyPenalty ?? 0,
      presencePenalty: presencePenalty ?? 0,
      seed: seed ?? Math.floor((options.random ?? Math.random)() * 2 ** 53),
    },
    maxNewTokens,
    stop,
    returnFullText,
    details,
    decoderInputDetails,
    topNTokens: topNTokens ?? 0,
    truncate,
    ...(grammar ? { grammar } : {}),
  };
}

/**
 * TGI's token-count rules (14–16), checked where the prompt is tokenized: the total budget, then the
 * input length, on the prompt as `truncate` leaves it (its last `truncate` tokens).
 *
 * @returns the effective `max_new_tokens` (absent: what the budget leaves) and how many leading
 *   prompt tokens `truncate` drops.
 * @example
 * checkTokenBudget(10, { ...params, maxNewTokens: null, truncate: 4 }, { ...limits, maxTotalTokens: 20 });
 * // { maxNewTokens: 16, dropLeading: 6 }
 */
export function checkTokenBudget(
  inputLength: number,
  params: ValidatedParameters,
  limits: ValidationLimits,
): { maxNewTokens: number; dropLeading: number } {
  const length = params.truncate !== null ? Math.min(inputLength, params.truncate) : inputLength;
  const maxNewTokens = params.maxNewTokens ?? Math.max(0, limits.maxTotalTokens - length);
  if (length + maxNewTokens > limits.maxTotalTokens) {
    fail(
      `\`inputs\` tokens + \`max_new_tokens\` must be <= ${limits.maxTotalTokens}. ` +
        `Given: ${length} \`inputs\` tokens and ${maxNewTokens} \`max_new_tokens\``,
      'max_new_tokens',
    );
  }
  if (length > limits.maxInputTokens) throw inputsTooLong(limits.maxInputTokens, length);
  // Only reachable when maxInputTokens >= maxTotalTokens: a full prompt leaves no room for a token.
  if (maxNewTokens === 0) throw inputsTooLong(limits.maxTotalTokens, length);
  return { maxNewTokens, dropLeading: inputLength - length };
}

/** TGI's refusal of a prompt over `max` tokens; `/tokenize` refuses with it too. */
export function inputsTooLong(max: number, given: number): ValidationError {
  return new ValidationError(`\`inputs\` must have less than ${max} tokens. Given: ${given}`, 'inputs');
}

function fail(message: string, param: string): never {
  throw new ValidationError(message, param);
}

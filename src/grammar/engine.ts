/**
 * The grammar engine of one model: created in the generation worker on the first request that
 * needs a grammar (loading xgrammar then, ~0.1–0.3 s), it screens grammars, compiles them against
 * the model's vocabulary (or takes them from the cache) and hands out row matchers.
 *
 * A compiled grammar cannot leave the WASM instance that compiled it, and masks cost microseconds,
 * so all of this runs on the worker's thread, next to the sampler (structured-output.md §5.2).
 * Compiling is synchronous: a cold compile (1–300 ms for what the preflight lets through) delays
 * every row's next token by that much; repeated schemas (agent loops resend the same tools) hit
 * the cache.
 */
import { ValidationError } from '../errors.js';
import { CompiledGrammarCache, type CacheEntry } from './compiled-cache.js';
import { GrammarRowMatcher, type RowMatcher } from './matcher.js';
import { GrammarScreen, type JsonWhitespace, type LoweredGrammar } from './screen.js';
import { grammarKey, type GrammarSpec } from './spec.js';
import { grammarVocabulary, type GrammarVocabulary } from './vocabulary.js';
import {
  createXgrammarRuntime,
  wasmFailure,
  type CompiledGrammarHandle,
  type CompilerHandle,
  type XgrammarRuntime,
} from './xgrammar-binding.js';

export interface GrammarEngineOptions {
  /** The parsed `tokenizer.json`. */
  tokenizerJson: Record<string, unknown>;
  /** The width of a logits row (config.json's `vocab_size`). */
  vocabSize: number;
  /** The eos ids (config and generation config): the only tokens allowed once a grammar is complete. */
  stopTokenIds: readonly number[];
  /** Texts grammars write that may be special tokens in some vocabularies (the tool-call tags). */
  formatTexts?: readonly string[];
  /** Default `compact`. */
  whitespace?: JsonWhitespace;
  /** Compiled grammars kept (default 128). */
  cacheSize?: number;
  /** Called after each compile (not for cache hits), e.g. for a histogram. */
  onCompile?: (seconds: number) => void;
}

/** Upper bounds (s) of the compile-time histogram's buckets: 1–300 ms is usual, seconds the worst. */
export const COMPILE_SECONDS_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Counters for `/metrics`, since the engine was made. Plain data: they cross `postMessage`. */
export interface GrammarStats {
  /** Compiles (cache misses), failed ones included, and their time. */
  compiles: number;
  compileSeconds: number;
  /** Compiles that took at most `COMPILE_SECONDS_BUCKETS[i]`, for each i (cumulative, as Prometheus' `le`). */
  compileBuckets: number[];
  cacheHits: number;
  /** Compiled grammars held, in use or idle. */
  cached: number;
  evictions: number;
  liveMatchers: number;
  /** Grammars refused by xgrammar's parse (the TypeScript rules' refusals are not counted). */
  rejected: number;
  /** Grammars refused with a 422 for any reason: the rules, xgrammar's parse, a language with no text. */
  refused: number;
  screenInstances: number;
  /** Linear memory of the serving WASM instance. */
  wasmBytes: number;
}

export interface GrammarEngine {
  readonly vocabSize: number;
  /**
   * A matcher for one row, at the grammar's start. Call `release()` when the row ends however it
   * ends (finished, cancelled, failed).
   *
   * @param param the request field the grammar came from, for error messages.
   * @throws ValidationError (422) for a grammar that is refused.
   */
  createMatcher(spec: GrammarSpec, param?: string): Promise<RowMatcher>;
  stats(): GrammarStats;
}

/** The instance that compiles and matches: it never sees an unscreened grammar. */
interface Serving {
  runtime: XgrammarRuntime;
  compiler: CompilerHandle;
}

interface Compiled {
  serving: Serving;
  handle: CompiledGrammarHandle;
}

/**
 * @example
 * const grammars = await createGrammarEngine({ tokenizerJson, vocabSize: 49152, stopTokenIds: [2] });
 * const matcher = await grammars.createMatcher({ type: 'json_schema', schema: { type: 'object' } });
 * matcher.fillMask(); matcher.applyMask(row); ...; matcher.accept(id);
 */
export async function createGrammarEngine(options: GrammarEngineOptions): Promise<GrammarEngine> {
  const { vocabSize, stopTokenIds, onCompile } = options;
  const vocabulary = grammarVocabulary(options.tokenizerJson, { vocabSize, formatTexts: options.formatTexts });
  const screen = new GrammarScreen(options.whitespace ?? 'compact');
  const cache = new CompiledGrammarCache<Compiled>(options.cacheSize ?? 128, (compiled) => compiled.handle.delete());
  let serving = await createServing(vocabulary, vocabSize, stopTokenIds);
  /** A new serving instance being made after the current one failed. */
  let replacement: Promise<void> | null = null;
  const counts = { compiles: 0, compileSeconds: 0, cacheHits: 0, liveMatchers: 0, refused: 0 };
  const compileBuckets = COMPILE_SECONDS_BUCKETS.map(() => 0);

  const compile = (lowered: LoweredGrammar, param: string): CompiledGrammarHandle => {
    const { wasm } = serving.runtime;
    const started = performance.now();
    try {
      if (lowered.kind === 'structural_tag') return serving.compiler.CompileStructuralTag(lowered.json);
      const grammar = wasm.Grammar.FromEBNF(lowered.ebnf, 'root');
      try {
        return serving.compiler.CompileGrammar(grammar);
      } finally {
        grammar.delete();
      }
    } catch (error) {
      if (!wasmFailure(error)) throw error;
      // Something got past the screen (nothing known does). Whatever the failure, replace this
      // instance rather than trust it; rows on it keep it alive until they release their matchers.
      const reason = serving.runtime.takeError() ?? 'the grammar engine refused it';
      cache.clear();
      replacement ??= createServing(vocabulary, vocabSize, stopTokenIds)
        .then((fresh) => {
          serving = fresh;
        })
        // Failing to make one leaves the old instance; the next failure tries again.
        .catch(() => {})
        .finally(() => (replacement = null));
      throw new ValidationError(`grammar is not valid: ${reason}`, param);
    } finally {
      const seconds = (performance.now() - started) / 1000;
      counts.compiles++;
      counts.compileSeconds += seconds;
      COMPILE_SECONDS_BUCKETS.forEach((le, i) => {
        if (seconds <= le) compileBuckets[i]++;
      });
      onCompile?.(seconds);
    }
  };

  const matcherFor = (entry: CacheEntry<Compiled>, param: string): RowMatcher => {
    const { serving: owner, handle } = entry.value;
    counts.liveMatchers++;
    const matcher = new GrammarRowMatcher(
      owner.runtime.wasm,
      new owner.runtime.wasm.GrammarMatcher(handle, undefined, false, -1),
      vocabSize,
      () => {
        counts.liveMatchers--;
        cache.release(entry);
      },
    );
    // A grammar whose language is empty (`root ::= root`) compiles, then allows no token at all.
    matcher.fillMask();
    if (!hasAllowed(matcher, vocabSize)) {
      matcher.release();
      throw new ValidationError('grammar is not valid: it matches no text at all', param);
    }
    return matcher;
  };

  return {
    vocabSize,
    async createMatcher(spec, param = 'grammar') {
      try {
        const key = grammarKey(spec);
        const hit = cache.acquire(key);
        if (hit) {
          counts.cacheHits++;
          return matcherFor(hit, param);
        }
        const lowered = await screen.lower(spec, param);
        if (replacement) await replacement;
        // Another request may have compiled the same grammar while this one was being screened.
        const entry = cache.acquire(key) ?? cache.insert(key, { serving, handle: compile(lowered, param) });
        return matcherFor(entry, param);
      } catch (error) {
        if (ValidationError.isInstance(error)) counts.refused++;
        throw error;
      }
    },
    stats() {
      return {
        ...counts,
        compileBuckets: [...compileBuckets],
        cached: cache.size,
        evictions: cache.evictions,
        rejected: screen.rejected,
        screenInstances: screen.instances,
        wasmBytes: serving.runtime.wasm.HEAP8.byteLength,
      };
    },
  };
}

function hasAllowed(matcher: RowMatcher, vocabSize: number): boolean {
  for (let id = 0; id < vocabSize; id++) if (matcher.allows(id)) return true;
  return false;
}

async function createServing(vocabulary: GrammarVocabulary, vocabSize: number, stopTokenIds: readonly number[]): Promise<Serving> {
  const runtime = await createXgrammarRuntime();
  const { wasm } = runtime;
  const tokens = wasm.vecStringFromJSArray(vocabulary.tokens);
  const stops = wasm.vecIntFromJSArray([...stopTokenIds]);
  try {
    const info = new wasm.TokenizerInfo(tokens, vocabulary.vocabType.toUpperCase(), vocabSize, stops, vocabulary.prependSpace);
    try {
      // xgrammar's cache is unbounded and WASM memory never shrinks: CompiledGrammarCache bounds ours.
      return { runtime, compiler: new wasm.GrammarCompiler(info, 1, false) };
    } finally {
      // The compiler keeps its own reference to the vocabulary.
      info.delete();
    }
  } finally {
    tokens.delete();
    stops.delete();
  }
}

/**
 * Grammar-constrained generation on xgrammar. Importing this loads nothing: the WASM module is
 * evaluated by `createGrammarEngine`, on the first request that needs a grammar.
 */
export {
  COMPILE_SECONDS_BUCKETS,
  createGrammarEngine,
  type GrammarEngine,
  type GrammarEngineOptions,
  type GrammarStats,
} from './engine.js';
export type { RowMatcher } from './matcher.js';
export { normalizeJsonSchema } from './preflight.js';
export type { JsonWhitespace } from './screen.js';
export { GRAMMAR_LIMITS, grammarKey, type GrammarSpec, type GrammarTag, type JsonSchema } from './spec.js';

/**
 * What a request asks its output to match, as plain data: the protocol parsers build it, it crosses
 * the worker boundary by structured clone, and the grammar engine compiles it. No xgrammar here.
 */

/** A JSON schema after `normalizeJsonSchema`: `true`/`false` or an object. */
export type JsonSchema = boolean | { [key: string]: unknown };

/** One tag of a structural tag: text between `begin` and `end` must match `schema`. */
export interface GrammarTag {
  begin: string;
  schema: JsonSchema;
  end: string;
}

export type GrammarSpec =
  /** JSON matching the schema; OpenAI's `json_object` is `{ type: 'object' }`. */
  | { type: 'json_schema'; schema: JsonSchema }
  /** Text that the regular expression matches in full (xgrammar's regex dialect: no lookaround). */
  | { type: 'regex'; pattern: string }
  /** Exactly one of the strings, as they are (not JSON-quoted). */
  | { type: 'choice'; choices: string[] }
  /** An xgrammar EBNF grammar (GBNF-compatible) with a `root` rule. */
  | { type: 'grammar'; grammar: string }
  /**
   * Free text until a trigger, then one of the tags whose `begin` starts with it (tool calls).
   * `atLeastOne`: a tag must come first; `stopAfterFirst`: only the end of text after one tag.
   */
  | { type: 'structural_tag'; triggers: string[]; tags: GrammarTag[]; atLeastOne: boolean; stopAfterFirst: boolean };

/**
 * Caps that keep compile times within a few hundred milliseconds (structured-output.md §3.1.5,
 * §5.4): everything larger is refused before it reaches xgrammar.
 */
export const GRAMMAR_LIMITS = {
  /** A schema, regex or grammar as JSON text / source text, in UTF-16 code units. */
  maxSourceLength: 64 * 1024,
  maxEnumMembers: 1024,
  /** minItems / maxItems, and every `{n,m}` count in a regex or grammar. */
  maxRepetition: 1000,
  maxChoices: 1024,
  /**
   * One choice or enum string, and all choices together: alternatives of long strings are what
   * xgrammar compiles slowest (64 choices of 250 characters: 3 s).
   */
  maxChoiceLength: 128,
  maxChoiceListLength: 16 * 1024,
  maxTools: 64,
} as const;

/**
 * The compile cache's key. Specs come out of our own parsers, which rebuild schemas with their
 * keywords in one order, so equal requests give equal strings; property order is kept because it
 * is the order the grammar emits.
 *
 * @example
 * grammarKey({ type: 'regex', pattern: '\\d+' }); // '{"type":"regex","pattern":"\\\\d+"}'
 */
export function grammarKey(spec: GrammarSpec): string {
  return JSON.stringify(spec);
}

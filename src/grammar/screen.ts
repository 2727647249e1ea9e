/**
 * Grammar screening: the TypeScript rules (`preflightGrammar`), then a parse in a throwaway WASM
 * instance that has no tokenizer and serves no row.
 *
 * Every invalid grammar aborts the xgrammar instance that parses it (or throws a C++ exception
 * through it). Left as the abort leaves it, an instance breaks after some tens of aborts: the next
 * call aborts on valid input or spins forever (structured-output.md §3.1.4). What wore it out was
 * its stack pointer, which no abort restores; `guard` restores it, after which 5,000 aborts left an
 * instance parsing and lowering exactly as a fresh one. Making a new instance costs 3–60 ms, and
 * when one was retired every 8 aborts a run of bad grammars waited for them (up to 130 ms each);
 * now an instance is retired after `ABORT_BUDGET` aborts, a margin for whatever an abort leaks on
 * the heap, or at once after a trap. Its successor is started at the first failure, so it is warm
 * when needed. The serving instance only ever sees what passed here.
 *
 * The parse is also the lowering: JSON schemas become EBNF here (xgrammar's own converter, with our
 * whitespace settings), so tool-call tags get the same compact JSON as `response_format`.
 */
import { ValidationError } from '../errors.js';
import { preflightGrammar } from './preflight.js';
import type { GrammarSpec, JsonSchema } from './spec.js';
import { createXgrammarRuntime, wasmFailure, type XgrammarInstance, type XgrammarRuntime } from './xgrammar-binding.js';

/** What the serving instance compiles: EBNF, or a structural tag as JSON. */
export type LoweredGrammar = { kind: 'ebnf'; ebnf: string } | { kind: 'structural_tag'; json: string };

/**
 * `compact`: one line, `", "` and `": "` separators (fewer tokens, compiles faster, and a small
 * model cannot loop on grammar-legal whitespace); `any`: any whitespace between JSON tokens.
 */
export type JsonWhitespace = 'compact' | 'any';

const ABORT_BUDGET = 1000;

interface Slot {
  ready: Promise<XgrammarRuntime>;
  aborts: number;
}

export class GrammarScreen {
  readonly #whitespace: JsonWhitespace;
  #current: Slot;
  #next: Slot | null = null;
  #instances = 0;
  #rejected = 0;

  constructor(whitespace: JsonWhitespace) {
    this.#whitespace = whitespace;
    this.#current = this.#slot();
  }

  /** Screening instances made so far. */
  get instances(): number {
    return this.#instances;
  }

  /** Grammars xgrammar refused. */
  get rejected(): number {
    return this.#rejected;
  }

  /** WASM memory of the current screening instance, once it exists. */
  async wasmBytes(): Promise<number> {
    return (await this.#current.ready).wasm.HEAP8.byteLength;
  }

  /**
   * @throws ValidationError (422) for a grammar the rules or xgrammar refuse, with xgrammar's reason.
   */
  async lower(spec: GrammarSpec, param: string): Promise<LoweredGrammar> {
    const checked = preflightGrammar(spec, param);
    for (;;) {
      const slot = this.#current;
      let runtime: XgrammarRuntime;
      try {
        runtime = await slot.ready;
      } catch (error) {
        if (slot === this.#current) this.#current = this.#slot();
        throw error;
      }
      // Retired while we waited: each instance must see at most ABORT_BUDGET aborts.
      if (slot !== this.#current) continue;
      try {
        return runtime.guard(() => lower(runtime.wasm, checked, this.#whitespace));
      } catch (error) {
        const failure = wasmFailure(error);
        if (!failure) throw error;
        this.#rejected++;
        this.#retire(slot, failure === 'broken');
        const reason = runtime.takeError() ?? 'the grammar engine refused it';
        throw new ValidationError(`grammar is not valid: ${reason}`, param);
      }
    }
  }

  #retire(slot: Slot, now: boolean): void {
    this.#next ??= this.#slot();
    if (++slot.aborts < ABORT_BUDGET && !now) return;
    this.#current = this.#next;
    this.#next = null;
  }

  #slot(): Slot {
    this.#instances++;
    const ready = createXgrammarRuntime();
    // A failure surfaces to the request that awaits this slot, not as an unhandled rejection.
    ready.catch(() => {});
    return { ready, aborts: 0 };
  }
}

function lower(wasm: XgrammarInstance, spec: GrammarSpec, whitespace: JsonWhitespace): LoweredGrammar {
  const ebnf = (text: string): LoweredGrammar => {
    wasm.Grammar.FromEBNF(text, 'root').delete();
    return { kind: 'ebnf', ebnf: text };
  };
  const tag = (format: object): LoweredGrammar => {
    const json = JSON.stringify({ type: 'structural_tag', format });
    wasm.Grammar.FromStructuralTag(json).delete();
    return { kind: 'structural_tag', json };
  };
  switch (spec.type) {
    case 'json_schema':
      return ebnf(schemaToEbnf(wasm, spec.schema, whitespace));
    case 'grammar':
      return ebnf(spec.grammar);
    case 'choice':
      // JSON string escapes are also EBNF string escapes.
      return ebnf(`root ::= ${spec.choices.map((choice) => JSON.stringify(choice)).join(' | ')}`);
    case 'regex':
      return tag({ type: 'regex', pattern: spec.pattern });
    case 'structural_tag':
      return tag({
        type: 'triggered_tags',
        triggers: spec.triggers,
        tags: spec.tags.map(({ begin, schema, end }) => ({
          type: 'tag',
          begin,
          content: { type: 'grammar', grammar: schemaToEbnf(wasm, schema, whitespace) },
          end,
        })),
        at_least_one: spec.atLeastOne,
        stop_after_first: spec.stopAfterFirst,
      });
  }
}

function schemaToEbnf(wasm: XgrammarInstance, schema: JsonSchema, whitespace: JsonWhitespace): string {
  const compact = whitespace === 'compact';
  return wasm._JSONSchemaToEBNF(
    JSON.stringify(schema),
    !compact,
    undefined,
    compact ? { first: ', ', second: ': ' } : undefined,
    true,
    undefined,
    wasm.JSONFormat.kJSON,
  );
}

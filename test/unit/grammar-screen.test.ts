/**
 * The screening instance's wear, on the real `@mlc-ai/web-xgrammar` WASM: an abort leaves the WASM
 * stack pointer where the failed call left it, and that leak is what used to break an instance after
 * some tens of aborts. With the pointer put back (`guard`), one instance takes thousands of refused
 * grammars and still parses and lowers exactly as a fresh one does.
 */
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import type { GrammarSpec } from '../../src/grammar/index.js';
import { GrammarScreen } from '../../src/grammar/screen.js';
import { createXgrammarRuntime, type XgrammarInstance } from '../../src/grammar/xgrammar-binding.js';

const SCHEMAS = [
  { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'array', items: { type: 'string' } } }, required: ['a'] },
  { enum: ['x', 'y', 1, null] },
  { anyOf: [{ type: 'number', minimum: 3 }, { type: 'boolean' }] },
];

/** xgrammar's own lowering of each schema, and a regex and an EBNF grammar parsed back to text. */
function lowerings(wasm: XgrammarInstance): string[] {
  const texts = SCHEMAS.map((schema) =>
    wasm._JSONSchemaToEBNF(JSON.stringify(schema), false, undefined, { first: ', ', second: ': ' }, true, undefined, wasm.JSONFormat.kJSON),
  );
  for (const ebnf of texts) wasm.Grammar.FromEBNF(ebnf, 'root').delete();
  const regex = wasm.Grammar.FromStructuralTag(
    JSON.stringify({ type: 'structural_tag', format: { type: 'regex', pattern: '[0-9]{3}-[a-z]+' } }),
  );
  const grammar = wasm.Grammar.FromEBNF('root ::= "a" [0-9]+ | "b"', 'root');
  texts.push(
    String((regex as unknown as { ToString(): string }).ToString()),
    String((grammar as unknown as { ToString(): string }).ToString()),
  );
  regex.delete();
  grammar.delete();
  return texts;
}

describe('an xgrammar instance after aborts', () => {
  it('with its stack pointer put back, 2,000 aborts leave it lowering exactly as a fresh instance, its memory unchanged', async () => {
    const [worn, fresh] = await Promise.all([createXgrammarRuntime(), createXgrammarRuntime()]);
    const { wasm } = worn;
    const memory = wasm.HEAP8.byteLength;
    const failures: Array<(k: number) => unknown> = [
      (k) => wasm.Grammar.FromEBNF(`root ::= (${k}`, 'root'),
      (k) => wasm.Grammar.FromEBNF(`root ::= rule${k}`, 'root'),
      (k) => wasm.Grammar.FromStructuralTag(JSON.stringify({ type: 'structural_tag', format: { type: 'regex', pattern: `(${k}` } })),
      (k) =>
        wasm._JSONSchemaToEBNF(JSON.stringify({ type: `widget${k}` }), false, undefined, undefined, true, undefined, wasm.JSONFormat.kJSON),
      (k) =>
        wasm._JSONSchemaToEBNF(
          JSON.stringify({ $ref: `#/$defs/m${k}` }),
          false,
          undefined,
          undefined,
          true,
          undefined,
          wasm.JSONFormat.kJSON,
        ),
    ];
    let aborted = 0;
    for (let i = 0; i < 2000; i++) {
      try {
        worn.guard(() => failures[i % failures.length](i));
      } catch (error) {
        expect(String(error)).toMatch(/Aborted/);
        aborted++;
      }
    }
    expect(aborted).toBe(2000);
    // The reason of the last one is still what it printed.
    expect(worn.takeError()).toMatch(/\$ref|m1999/);
    expect(lowerings(wasm)).toEqual(lowerings(fresh.wasm));
    expect(wasm.HEAP8.byteLength).toBe(memory);
  });
});

describe('GrammarScreen', () => {
  const bad = (i: number): GrammarSpec =>
    i % 2 === 0 ? { type: 'regex', pattern: `(${i}` } : { type: 'json_schema', schema: { type: 'integer', minimum: i + 10, maximum: i } };

  it('refuses 500 bad grammars with a 422 each on one instance (plus its warm successor), then lowers a valid one', async () => {
    const screen = new GrammarScreen('compact');
    for (let i = 0; i < 500; i++) {
      const error = await screen.lower(bad(i), 'grammar').catch((e: unknown) => e);
      expect(ValidationError.isInstance(error) && error.status, `grammar ${i}`).toBe(422);
    }
    expect(screen.rejected).toBe(500);
    expect(screen.instances).toBe(2);
    const lowered = await screen.lower(
      { type: 'json_schema', schema: { type: 'object', properties: { ok: { type: 'boolean' } } } },
      'grammar',
    );
    expect(lowered).toMatchObject({ kind: 'ebnf', ebnf: expect.stringContaining('"true"') });
  });
});

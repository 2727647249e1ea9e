/**
 * The package's entry points as a user loads them, from a build of this tree (tsup.config.ts, into a
 * private folder): every `exports` path in both module systems, one copy of the core per module
 * system so an error thrown under `./express` or `./koa` is an `instanceof` the class exported by
 * `.`, and the main entry limited to the public API. package-build.test.ts runs the engine from the
 * published build, whose worker must be found beside the shared chunks.
 */
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'tsup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
type Module = Record<string, any>;
type Format = 'esm' | 'cjs';

let out: string;
let exportsMap: Record<string, { import: { default: string }; require: { default: string } }>;
const require = createRequire(import.meta.url);

/** One `exports` path (`.`, `./express`, ...) of the private build, loaded as ESM or CJS. */
async function load(subpath: string, format: Format): Promise<Module> {
  const target = exportsMap[subpath][format === 'esm' ? 'import' : 'require'].default;
  const file = join(out, target.replace(/^\.\/dist\//, ''));
  return format === 'esm' ? import(pathToFileURL(file).href) : require(file);
}

beforeAll(async () => {
  exportsMap = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).exports;
  // Inside the project, so the build resolves its dependencies from node_modules as an install would.
  await mkdir(join(ROOT, 'node_modules/.cache'), { recursive: true });
  out = await mkdtemp(join(ROOT, 'node_modules/.cache/entry-points-'));
  await build({ outDir: out, dts: false, sourcemap: false, silent: true });
}, 120_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('the entry points of a build', () => {
  it('are all built, for both module systems', async () => {
    expect(Object.keys(exportsMap).sort()).toEqual(['.', './express', './fixture', './koa', './protocol']);
    for (const subpath of Object.keys(exportsMap)) {
      for (const format of ['esm', 'cjs'] as const)
        expect(Object.keys(await load(subpath, format)).length, `${subpath} ${format}`).toBeGreaterThan(0);
    }
  });

  it('hold one copy of the core per module system', async () => {
    const files = await readdir(out);
    for (const ext of ['.js', '.cjs']) {
      const holders: string[] = [];
      for (const file of files.filter((f) => f.endsWith(ext))) {
        if (/class InferenceError\b|InferenceError = class\b/.test(await readFile(join(out, file), 'utf8'))) holders.push(file);
      }
      expect(holders, ext).toHaveLength(1);
      expect(holders[0]).toMatch(/^chunk-/);
    }
  });

  for (const format of ['esm', 'cjs'] as const) {
    it(`${format}: an error from the Express and Koa adapters is an instanceof the classes of "."`, async () => {
      const core = await load('.', format);
      const missing = join(tmpdir(), `si-no-such-model-${process.pid}`);
      for (const adapter of ['./express', './koa']) {
        const reports: unknown[] = [];
        const { streamingInference } = await load(adapter, format);
        const { handler } = streamingInference({ model: missing, metrics: false, onError: (error: unknown) => reports.push(error) });
        const error = await handler.ready().catch((e: unknown) => e);
        expect(error, adapter).toBeInstanceOf(core.ModelLoadError);
        expect(error).toBeInstanceOf(core.InferenceError);
        expect(core.ModelLoadError.isInstance(error)).toBe(true);
        expect(core.ValidationError.isInstance(error)).toBe(false);
        expect(reports).toEqual([error]);
      }
    });
  }

  it('across module systems, isInstance still holds where instanceof cannot', async () => {
    const esm = await load('.', 'esm');
    const cjs = await load('.', 'cjs');
    expect(esm.ValidationError).not.toBe(cjs.ValidationError);
    expect(cjs.ValidationError.isInstance(new esm.ValidationError('x'))).toBe(true);
    expect(esm.InferenceError.isInstance(new cjs.OverloadedError())).toBe(true);
    expect(esm.ValidationError.isInstance(new cjs.OverloadedError())).toBe(false);
  });
});

describe('what each entry exports', () => {
  it('".": the engine, the handler, the errors; no fixture builder, no internals', async () => {
    const names = Object.keys(await load('.', 'esm'));
    expect(names).toEqual(
      expect.arrayContaining([
        'GenerationError',
        'InferenceError',
        'ModelLoadError',
        'OverloadedError',
        'TemplateError',
        'UnavailableError',
        'ValidationError',
        'createEngine',
        'createInferenceHandler',
      ]),
    );
    for (const internal of ['buildFixtureModel', 'ensureFixtureModel', 'createMetrics', 'AdmissionController', 'validateParameters']) {
      expect(names).not.toContain(internal);
    }
  });

  it('"./fixture": the fixture-model builder', async () => {
    const fixture = await load('./fixture', 'cjs');
    expect(typeof fixture.buildFixtureModel).toBe('function');
    expect(typeof fixture.ensureFixtureModel).toBe('function');
  });

  it('"./protocol": the pure encoders, which turn engine events into wire bodies', async () => {
    const protocol = await load('./protocol', 'esm');
    const { ValidationError } = await load('.', 'esm');
    expect(() => protocol.parseTgiGenerateBody({ inputs: 3 })).toThrow(ValidationError);
    expect(protocol.errorResponse(new ValidationError('`n` must be 1', 'n'), 'tgi').status).toBe(422);
    expect(protocol.DONE_FRAME).toBe('data: [DONE]\n\n');
    for (const name of [
      'tgiStreamEvent',
      'tgiGenerateResponse',
      'parseChatRequest',
      'ChatChunkEncoder',
      'chatCompletionResponse',
      'parseCompletionRequest',
      'CompletionChunkEncoder',
      'completionResponse',
      'formatSseFrame',
      'inStreamErrorFrame',
    ]) {
      expect(typeof protocol[name], name).toBe('function');
    }
  });
});

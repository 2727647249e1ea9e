import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { ensureFixtureModel } from '../../src/fixture/index.js';

// `npm test` builds first; the published bundles must find their worker file from both entries.
const dist = new URL('../../dist/', import.meta.url);

async function generateWith(mod: { createEngine: (o: { model: string }) => Promise<any> }): Promise<string> {
  const engine = await mod.createEngine({ model: await ensureFixtureModel('tiny') });
  try {
    let text = '';
    for await (const event of engine.generate({ inputs: 'Hi', parameters: { max_new_tokens: 3, do_sample: false } })) {
      if (event.type === 'end') text = event.generatedText;
    }
    return text;
  } finally {
    await engine.close();
  }
}

describe('the built package', () => {
  it('has ESM and CJS entries with type declarations for ".", "./express", "./koa", "./protocol" and "./fixture"', () => {
    for (const name of ['index', 'express', 'koa', 'protocol', 'fixture']) {
      for (const ext of ['.js', '.cjs', '.d.ts', '.d.cts']) expect(existsSync(new URL(name + ext, dist))).toBe(true);
    }
  });

  it('generates through the ESM and the CJS build alike', async () => {
    const esm = await import(new URL('index.js', dist).href);
    const cjs = createRequire(import.meta.url)(new URL('index.cjs', dist).pathname);
    const [a, b] = [await generateWith(esm), await generateWith(cjs)];
    expect(a.length).toBeGreaterThan(0);
    expect(b).toBe(a);
  });
});

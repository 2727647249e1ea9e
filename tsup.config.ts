import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    express: 'adapters/express.ts',
    koa: 'adapters/koa.ts',
    cli: 'src/cli.ts',
    // The engine worker is its own entry so both the ESM and the CJS build can find it beside them.
    worker: 'src/engine/worker.ts',
  },
  format: ['esm', 'cjs'],
  dts: { entry: { index: 'src/index.ts', express: 'adapters/express.ts', koa: 'adapters/koa.ts' } },
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
  shims: true,
});

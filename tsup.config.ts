import { defineConfig } from 'tsup';

/** The published entry points, each with type declarations. */
const PUBLIC = {
  index: 'src/index.ts',
  express: 'adapters/express.ts',
  koa: 'adapters/koa.ts',
  protocol: 'src/protocol/index.ts',
  fixture: 'src/fixture/index.ts',
};

export default defineConfig({
  entry: {
    ...PUBLIC,
    cli: 'src/cli.ts',
    // The engine worker is its own entry so both the ESM and the CJS build can find it beside them.
    worker: 'src/engine/worker.ts',
  },
  format: ['esm', 'cjs'],
  dts: { entry: PUBLIC },
  sourcemap: true,
  clean: true,
  target: 'node20',
  // One copy of the core per format, in chunks beside the entries, so the error classes of
  // `streaming-inference` are the ones `./express` and `./koa` throw (`instanceof` holds). For CJS
  // tsup builds ESM chunks and rewrites them to require(); the chunks sit beside worker.js/worker.cjs,
  // where the engine looks for its worker.
  splitting: true,
  shims: true,
});

import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', './test/summary-reporter.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Each file loads its own ONNX sessions; two forks match the two cores without oversubscribing them.
    pool: 'forks',
    maxWorkers: 2,
  },
});

import { ensureFixtureModel } from '../src/fixture/index.js';

/** Builds the tiny fixture model once (into `.fixtures/tiny`) before any test file runs. */
export default async function setup(): Promise<void> {
  await ensureFixtureModel('tiny');
}

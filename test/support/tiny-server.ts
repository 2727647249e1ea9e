import { afterAll, beforeAll } from 'vitest';
import { createEngine } from '../../src/engine/engine.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { Engine } from '../../src/types.js';
import { type MountStyle, type RunningServer, startServer } from '../conformance/servers.js';

export interface TinySuite {
  readonly engine: Engine;
  readonly server: RunningServer;
}

/**
 * One engine on the tiny fixture behind an Express 5 mount for the calling test file: started in
 * its `beforeAll`, closed in its `afterAll`. Read `engine` and `server` inside the tests.
 */
export function serveTinyFixture(mount: MountStyle): TinySuite {
  const suite = {} as { engine: Engine; server: RunningServer };
  beforeAll(async () => {
    suite.engine = await createEngine({ model: await ensureFixtureModel('tiny') });
    suite.server = await startServer({ framework: 'express5', mount }, { engine: suite.engine });
  });
  afterAll(async () => {
    await suite.server?.close();
    await suite.engine?.close();
  });
  return suite;
}

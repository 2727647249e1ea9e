import { ensureFixtureModel } from '../../src/fixture/index.js';
import type { EngineOptions } from '../../src/types.js';

/**
 * Engine options for the tiny model built so that any forward pass over exactly `failAt` positions
 * fails inside ONNX Runtime. Speculation is off: a pass that verifies several tokens would span that
 * length and step over the fault.
 */
export async function faultModelOptions(failAt: number): Promise<EngineOptions> {
  return { model: await ensureFixtureModel('tiny', { failAtLength: failAt }), speculativeTokens: 0 };
}

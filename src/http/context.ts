import type { AdmissionController } from '../admission.js';
import type { Engine } from '../types.js';
import type { Metrics } from './metrics.js';

/** What every route handler needs, built once per mounted handler. */
export interface HandlerContext {
  /** The loaded engine; throws UnavailableError (503) while loading, ModelLoadError (500) after a load failure. */
  engine(): Engine;
  /** Whether the engine loaded and serves (probing it after a failure). */
  healthy(): Promise<boolean>;
  /** This mount's own count of requests in flight. */
  admission: AdmissionController;
  /** The count every mount of `engine` shares, which /info reports. */
  engineAdmission(engine: Engine): AdmissionController;
  bodyLimit: number;
  /** A stream whose client has not read for this long is disconnected. */
  stallTimeoutMs: number;
  /** Interval of the keep-alive comment on an idle stream. */
  keepAliveMs: number;
  /** `auto`: the OpenAI routes fill unset sampling fields from the model's generation_config.json. */
  generationConfig: 'auto' | 'none';
  metrics: Metrics | null;
  /** Injected for deterministic ids and timestamps in tests. */
  newId(prefix: string): string;
  nowSeconds(): number;
}

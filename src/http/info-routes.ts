import type { ServerResponse } from 'node:http';
import { validateParameters } from '../params.js';
import { parseTgiGenerateBody, tgiTokenizeResponse } from '../protocol/tgi.js';
import packageJson from '../../package.json' with { type: 'json' };
import type { HandlerContext } from './context.js';
import { sendJson } from './respond.js';

/** The release's own number: the build inlines package.json, so `/info` cannot drift from it. */
const VERSION: string = packageJson.version;

/** TGI's `Info` (protocol.md §1.7), plus the live admission count: engine-wide figures, whichever mount answers. */
export function serveInfo(ctx: HandlerContext, res: ServerResponse): void {
  const engine = ctx.engine();
  const { info } = engine;
  const stats = engine.stats();
  const admission = ctx.engineAdmission(engine);
  sendJson(res, 200, {
    model_id: info.modelId,
    model_sha: null,
    model_pipeline_tag: 'text-generation',
    model_dtype: info.kvDtype,
    model_device_type: 'cpu',
    max_concurrent_requests: admission.limit,
    max_best_of: info.limits.maxBestOf,
    max_stop_sequences: info.limits.maxStopSequences,
    max_input_tokens: info.limits.maxInputTokens,
    max_total_tokens: info.limits.maxTotalTokens,
    max_top_n_tokens: info.limits.maxTopNTokens,
    max_batch_size: info.maxBatchSize,
    max_batch_prefill_tokens: info.maxBatchPrefillTokens,
    max_batch_total_tokens: info.maxBatchTotalTokens,
    max_client_batch_size: 1,
    validation_workers: 1,
    router: 'streaming-inference',
    version: VERSION,
    sha: null,
    docker_label: null,
    in_flight_requests: admission.inFlight,
    queue_size: stats.queueSize,
    batch_size: stats.batchSize,
  });
}

/** 200 with an empty body when the model is loaded and healthy; TGI's 503 body otherwise. */
export async function serveHealth(ctx: HandlerContext, res: ServerResponse): Promise<void> {
  if (await ctx.healthy()) {
    res.writeHead(200, { 'Content-Length': 0 }).end();
    return;
  }
  sendJson(res, 503, { error: 'unhealthy', error_type: 'healthcheck' });
}

export function serveModels(ctx: HandlerContext, res: ServerResponse): void {
  const { modelId } = ctx.engine().info;
  sendJson(res, 200, { object: 'list', data: [{ id: modelId, object: 'model', created: 0, owned_by: 'streaming-inference' }] });
}

/**
 * `POST /tokenize` with TGI's `GenerateRequest` body, whose `parameters` are validated as on
 * `/generate` (TGI parses the same struct). `truncate` keeps the last tokens, as TGI's tokenizer
 * truncates from the left; their offsets still point into `inputs`.
 */
export async function serveTokenize(ctx: HandlerContext, res: ServerResponse, body: unknown): Promise<void> {
  const engine = ctx.engine();
  const request = parseTgiGenerateBody(body);
  const { truncate } = validateParameters(request.parameters, engine.info.limits, { stream: false });
  const tokens = await engine.tokenize(request.inputs);
  sendJson(res, 200, tgiTokenizeResponse(truncate === null ? tokens : tokens.slice(-truncate)));
}

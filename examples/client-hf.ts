/**
 * `@huggingface/inference` against our routes: `textGenerationStream` and `chatCompletion` with
 * `endpointUrl` pointing at the mount path.
 *
 * Run it against a running server: `npx tsx examples/client-hf.ts [BASE_URL]`
 * (default `LLM_URL` or http://127.0.0.1:3000/llm; `DEMO_API_KEY` if the server wants one).
 */
import { fileURLToPath } from 'node:url';
import { InferenceClient } from '@huggingface/inference';

export interface HfExampleResult {
  /** `textGenerationStream`'s text, put together from the chunks. */
  streamed: string;
  chunks: number;
  /** `chatCompletion`'s reply. */
  reply: string;
}

/** The text of one streamed chunk, in either shape the client may yield. */
function chunkText(chunk: unknown): string {
  // Since 4.13.17 the client calls `/v1/completions` and yields its raw chunks ({ choices: [{ text }] })
  // although its type still says TGI's { token: { text } }; older versions call `/` and yield TGI's shape.
  const c = chunk as { token?: { text?: string; special?: boolean }; choices?: Array<{ text?: string }> };
  if (c.token) return c.token.special ? '' : (c.token.text ?? '');
  return c.choices?.[0]?.text ?? '';
}

/**
 * @example
 * const { streamed, reply } = await main('http://127.0.0.1:3000/llm');
 */
export async function main(baseUrl: string, apiKey = process.env.DEMO_API_KEY, log = console.log): Promise<HfExampleResult> {
  const client = new InferenceClient(apiKey, { endpointUrl: baseUrl });

  let streamed = '';
  let chunks = 0;
  const stream = client.textGenerationStream({
    inputs: 'Once upon a time',
    parameters: { max_new_tokens: 24, do_sample: false },
  });
  for await (const chunk of stream) {
    streamed += chunkText(chunk);
    chunks += 1;
  }
  log(`textGenerationStream (${chunks} chunks): ${streamed}`);

  const completion = await client.chatCompletion({
    messages: [{ role: 'user', content: 'Tell me a story about a brave mouse.' }],
    max_tokens: 24,
    temperature: 0,
  });
  const reply = completion.choices[0].message.content ?? '';
  log(`chatCompletion: ${reply}`);
  return { streamed, chunks, reply };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main(process.argv[2] ?? process.env.LLM_URL ?? 'http://127.0.0.1:3000/llm');
}

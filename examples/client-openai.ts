/**
 * The official `openai` client against our routes: a chat completion, then the same one streamed.
 *
 * Run it against a running server: `npx tsx examples/client-openai.ts [BASE_URL]`
 * (default `LLM_URL` or http://127.0.0.1:3000/llm; `DEMO_API_KEY` if the server wants one).
 */
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

export interface OpenAIExampleResult {
  /** The model id from `/v1/models`. */
  model: string;
  /** The non-streamed reply. */
  reply: string;
  /** The streamed reply, put together from the deltas. */
  streamed: string;
  /** How many content deltas the stream delivered. */
  chunks: number;
}

/**
 * @example
 * const { reply, streamed } = await main('http://127.0.0.1:3000/llm');
 */
export async function main(baseUrl: string, apiKey = process.env.DEMO_API_KEY, log = console.log): Promise<OpenAIExampleResult> {
  // The SDK insists on a key; a server without auth ignores it.
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: apiKey ?? 'unused' });
  const { data } = await client.models.list();
  const model = data[0].id;
  const messages = [{ role: 'user' as const, content: 'Tell me a story about a brave mouse.' }];

  const completion = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
  const reply = completion.choices[0].message.content ?? '';
  log(`${model} (not streamed): ${reply}`);

  const stream = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, stream: true });
  let streamed = '';
  let chunks = 0;
  for await (const chunk of stream) {
    const text = chunk.choices[0]?.delta.content;
    if (!text) continue;
    streamed += text;
    chunks += 1;
  }
  log(`${model} (streamed, ${chunks} chunks): ${streamed}`);
  return { model, reply, streamed, chunks };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main(process.argv[2] ?? process.env.LLM_URL ?? 'http://127.0.0.1:3000/llm');
}

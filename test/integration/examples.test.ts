import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main as hfClient } from '../../examples/client-hf.js';
import { main as openaiClient } from '../../examples/client-openai.js';
import { startExpressApp, type RunningApp } from '../../examples/express-app.js';
import { startKoaApp } from '../../examples/koa-app.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';

// Every example runs here against the tiny fixture model, so none of them can rot unnoticed.

const KEY = 'example-secret';
const silent = () => {};

function post(url: string, body: unknown, key?: string): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  return fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
}

const GREEDY = { inputs: 'Once upon a time', parameters: { max_new_tokens: 24, do_sample: false } };

type Start = (options: { model: string; port: number; apiKey?: string; quiet?: boolean }) => Promise<RunningApp>;

function describeApp(name: string, start: Start, service: string): void {
  describe(name, () => {
    let app: RunningApp;
    let llm: string;

    beforeAll(async () => {
      app = await start({ model: await ensureFixtureModel('tiny'), port: 0, apiKey: KEY, quiet: true });
      llm = `${app.url}/llm`;
    });
    afterAll(() => app?.close());

    it('answers its own JSON route beside the LLM routes', async () => {
      const res = await fetch(`${app.url}/api/status`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ service, llm_in_flight: 0 });
    });

    it('refuses generation without the API key (401) and leaves the info routes open', async () => {
      expect((await post(`${llm}/generate`, GREEDY)).status).toBe(401);
      expect((await post(`${llm}/generate`, GREEDY, 'wrong-key')).status).toBe(401);
      expect((await post(`${llm}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Hi' }] })).status).toBe(401);
      const info = await fetch(`${llm}/info`);
      expect(info.status).toBe(200);
      expect(await info.json()).toMatchObject({ model_id: 'tiny', in_flight_requests: 0 });
    });

    it('generates through the mount, whole and streamed, with the same greedy text', async () => {
      const whole = await post(`${llm}/generate`, GREEDY, KEY);
      expect(whole.status).toBe(200);
      const { generated_text: text } = (await whole.json()) as { generated_text: string };
      expect(text.length).toBeGreaterThan(0);

      const stream = await post(`${llm}/generate_stream`, GREEDY, KEY);
      expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const events = (await stream.text())
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => JSON.parse(l.slice(5)));
      expect(events).toHaveLength(24);
      expect(events.map((e) => e.token.text).join('')).toBe(text);
      expect(events.at(-1).generated_text).toBe(text);
    });

    it('runs the openai client example: the streamed chat reply equals the whole one', async () => {
      const result = await openaiClient(llm, KEY, silent);
      expect(result.model).toBe('tiny');
      expect(result.reply.length).toBeGreaterThan(0);
      expect(result.chunks).toBeGreaterThan(1);
      expect(result.streamed).toBe(result.reply);
    });

    it('runs the @huggingface/inference client example: the same text as /generate', async () => {
      const result = await hfClient(llm, KEY, silent);
      const whole = (await (await post(`${llm}/generate`, GREEDY, KEY)).json()) as { generated_text: string };
      expect(result.chunks).toBeGreaterThan(1);
      expect(result.streamed).toBe(whole.generated_text);
      const openai = await openaiClient(llm, KEY, silent);
      expect(result.reply).toBe(openai.reply);
    });
  });
}

describeApp('examples/express-app.ts', startExpressApp, 'example-express-app');
describeApp('examples/koa-app.ts', startKoaApp, 'example-koa-app');

describe('examples/express-app.ts without a key', () => {
  let app: RunningApp;
  beforeAll(async () => {
    app = await startExpressApp({ model: await ensureFixtureModel('tiny'), port: 0 });
  });
  afterAll(() => app?.close());

  it('serves the demo page and its script', async () => {
    const page = await fetch(`${app.url}/`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    for (const id of ['prompt', 'generate', 'stop', 'plain-output', 'stream-output', 'in-flight']) expect(html).toContain(`id="${id}"`);
    const script = await fetch(`${app.url}/app.js`);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    expect(await script.text()).toContain("api('generate_stream')");
  });

  it('is open without a key and logs one line per request', async () => {
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      const res = await post(`${app.url}/llm/generate`, GREEDY);
      expect(res.status).toBe(200);
      await res.json();
      await vi.waitFor(() => expect(log).toHaveBeenCalledWith(expect.stringMatching(/^POST \/llm\/generate 200 \d+ ms$/)));
    } finally {
      log.mockRestore();
    }
  });

  it("answers a malformed JSON body with the app's JSON 400 (express.json() runs first)", async () => {
    const res = await fetch(`${app.url}/llm/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"inputs":',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error_type: 'app' });
  });
});

describe('examples/start-demo.ts (npm start), with DEMO_MODEL_SIZE=tiny', () => {
  it('prints progress and the URL, serves the page and the routes, and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'examples/start-demo.ts'], {
      env: { ...process.env, PORT: '0', DEMO_MODEL_SIZE: 'tiny' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const lines: string[] = [];
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          lines.push(line);
          const match = /^Demo: (http:\/\/127\.0\.0\.1:\d+)\//.exec(line);
          if (match) resolve(match[1]);
        });
        void exited.then((code) => reject(new Error(`start-demo exited (${code}):\n${lines.join('\n')}`)));
      });
      expect(lines[0]).toBe('Preparing the tiny fixture model in .fixtures/tiny (built once) ...');
      expect(lines).toContain('Loading it into ONNX Runtime ...');
      expect(lines.filter((l) => /^ {2}done in \d+\.\d s$/.test(l))).toHaveLength(2);

      expect(await (await fetch(`${url}/`)).text()).toContain('Streamed vs. not streamed');
      expect(await (await fetch(`${url}/llm/info`)).json()).toMatchObject({ model_id: 'tiny' });
      const res = await post(`${url}/llm/generate`, GREEDY);
      expect(((await res.json()) as { generated_text: string }).generated_text.length).toBeGreaterThan(0);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});

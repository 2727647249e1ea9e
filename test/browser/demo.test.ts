import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startExpressApp, type RunningApp } from '../../examples/express-app.js';
import { ensureFixtureModel } from '../../src/fixture/index.js';

// The demo page in a real browser (Debian's Chromium, which .ci/run installs), served by the example
// Express app on the `demo` fixture model: SmolLM2-135M's shape with 10 layers, tens of tokens per
// second on two cores, so streaming is visible and the whole test still takes seconds.

const SCREENSHOTS = new URL('../../test-results/', import.meta.url);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

interface Info {
  in_flight_requests: number;
  batch_size: number;
  queue_size: number;
}

const text = async (page: Page, id: string) => (await page.locator(`#${id}`).textContent()) ?? '';
const state = (page: Page, pane: string) => page.locator(`#${pane}-stats`).getAttribute('data-state');
/** Resolves once the page's in-flight count (from its poll of /info) shows `count`. */
const inFlightShows = (page: Page, count: number) => page.locator('#in-flight', { hasText: new RegExp(`^${count}$`) }).waitFor();

describe('the demo page', () => {
  let app: RunningApp;
  let browser: Browser;
  let page: Page;
  const info = async (): Promise<Info> => (await fetch(`${app.url}/llm/info`)).json() as Promise<Info>;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`No Chromium at ${CHROMIUM}: run \`apt-get install -y chromium\` or set CHROMIUM_PATH`);
    app = await startExpressApp({ model: await ensureFixtureModel('demo'), port: 0, quiet: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-gpu',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await mkdir(SCREENSHOTS, { recursive: true });
  });

  afterAll(async () => {
    await browser?.close();
    await app?.close();
  });

  it('shows the server info and an idle in-flight count', async () => {
    await page.goto(`${app.url}/`);
    await page.locator('#info dd').first().waitFor();
    expect(await text(page, 'info')).toContain('demo');
    expect(await text(page, 'in-flight')).toBe('0');
  });

  it('streams text on the right while the left pane is still empty, and both end with the same greedy text', async () => {
    await page.locator('#max-new-tokens').fill('150');
    await page.locator('#generate').click();

    await expect.poll(() => text(page, 'stream-output'), { timeout: 30_000, interval: 20 }).not.toBe('');
    const partial = await text(page, 'stream-output');
    expect(await text(page, 'plain-output')).toBe('');
    expect(await state(page, 'plain')).toBe('running');

    await page.locator('#plain-stats[data-state="done"]').waitFor({ timeout: 60_000 });
    await page.locator('#stream-stats[data-state="done"]').waitFor();
    const streamed = await text(page, 'stream-output');
    expect(streamed.length).toBeGreaterThan(partial.length);
    expect(streamed.startsWith(partial)).toBe(true);
    expect(await text(page, 'plain-output')).toBe(streamed);
    expect(await text(page, 'stream-stats')).toMatch(
      /^first token after \d+\.\d\d s · \d+\.\d tokens\/s · 150 tokens · total \d+\.\d\d s$/,
    );
    expect(await text(page, 'plain-stats')).toMatch(/^total \d+\.\d\d s · 150 tokens, all at the end$/);
    await inFlightShows(page, 0);
    await page.screenshot({ path: new URL('demo.png', SCREENSHOTS).pathname, fullPage: true });
  }, 90_000);

  it('Stop ends the stream, the server cancels the generations, and the in-flight count returns to 0', async () => {
    await page.locator('#max-new-tokens').fill('2000');
    await page.locator('#generate').click();
    // Both requests are in flight: the page's poll of /info shows them.
    await inFlightShows(page, 2);
    await expect.poll(async () => (await text(page, 'stream-output')).length, { timeout: 30_000 }).toBeGreaterThan(150);

    await page.locator('#stop').click();
    const stoppedAt = performance.now();
    await page.locator('#stream-stats[data-state="stopped"]').waitFor();
    expect(await state(page, 'plain')).toBe('stopped');
    expect(await text(page, 'plain-output')).toBe('');
    const kept = await text(page, 'stream-output');
    expect(kept.length).toBeGreaterThan(150);

    // 2000 tokens would take most of a minute; a cancelled generation leaves the batch at the next step.
    await expect.poll(info, { timeout: 5_000, interval: 100 }).toMatchObject({ in_flight_requests: 0, batch_size: 0, queue_size: 0 });
    expect(performance.now() - stoppedAt).toBeLessThan(5_000);
    await inFlightShows(page, 0);
    expect(await text(page, 'stream-output')).toBe(kept);
    const metrics = await (await fetch(`${app.url}/llm/metrics`)).text();
    expect(metrics).toMatch(/^tgi_request_failure\{err="dropped"\} 2$/m);
    await page.screenshot({ path: new URL('demo-stopped.png', SCREENSHOTS).pathname, fullPage: true });
  });
});

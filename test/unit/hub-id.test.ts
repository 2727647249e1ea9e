import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatHubId, parseHubId } from '../../src/hub/hub-id.js';
import { hubSettings } from '../../src/hub/settings.js';
import { HUB_ENV_KEYS } from '../support/hub-server.js';

describe('parseHubId', () => {
  it('reads org/name with an optional @revision', () => {
    expect(parseHubId('onnx-community/Qwen2.5-0.5B-Instruct')).toEqual({ repo: 'onnx-community/Qwen2.5-0.5B-Instruct', revision: 'main' });
    expect(parseHubId('HuggingFaceTB/SmolLM2-135M-Instruct@v1.0')).toEqual({
      repo: 'HuggingFaceTB/SmolLM2-135M-Instruct',
      revision: 'v1.0',
    });
    expect(parseHubId('a/b@refs/pr/3')).toEqual({ repo: 'a/b', revision: 'refs/pr/3' });
  });

  it('reads a folder after the name, for repositories that keep a model per folder', () => {
    const phi = 'microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4';
    expect(parseHubId(phi)).toEqual({
      repo: 'microsoft/Phi-3.5-mini-instruct-onnx',
      revision: 'main',
      subfolder: 'cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4',
    });
    expect(parseHubId('a/b/c@v2')).toEqual({ repo: 'a/b', revision: 'v2', subfolder: 'c' });
    expect(formatHubId(parseHubId(phi)!)).toBe(phi);
    expect(formatHubId(parseHubId('a/b/c@v2')!)).toBe('a/b/c@v2');
    expect(formatHubId({ repo: 'a/b', revision: 'main' })).toBe('a/b');
  });

  it('leaves paths and malformed ids alone', () => {
    for (const model of [
      './models/x',
      '/abs/dir',
      '../up/dir',
      'plain',
      'a/../b',
      'a/b/../c',
      'a/b/./c',
      'a/b/c/',
      'a/b//c',
      'a--b/c',
      'a/b@',
      'a/b@x@y',
      '.hidden/x',
      'a/b c',
    ]) {
      expect(parseHubId(model), model).toBeNull();
    }
  });
});

describe('hubSettings', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of [...HUB_ENV_KEYS, 'HF_HOME', 'XDG_CACHE_HOME']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  // Whatever the machine running the tests has set does not count.
  beforeEach(() => {
    for (const key of [...HUB_ENV_KEYS, 'HF_HOME', 'XDG_CACHE_HOME']) delete process.env[key];
  });

  it('reads the environment as huggingface_hub does', () => {
    Object.assign(process.env, {
      HF_ENDPOINT: 'http://mirror.local:8080/',
      HF_TOKEN: 'hf_abc',
      HF_HOME: '/data/hf',
      HF_HUB_OFFLINE: 'TRUE',
    });
    expect(hubSettings()).toEqual({
      endpoint: 'http://mirror.local:8080',
      token: 'hf_abc',
      cacheDir: join('/data/hf', 'hub'),
      offline: true,
    });
    process.env.HF_HUB_CACHE = '/cache';
    process.env.HF_HUB_OFFLINE = '0';
    expect(hubSettings()).toMatchObject({ cacheDir: '/cache', offline: false });
  });

  it('reads the older names huggingface_hub still honours: TRANSFORMERS_OFFLINE and HUGGING_FACE_HUB_TOKEN', () => {
    for (const key of ['HF_HUB_OFFLINE', 'HF_TOKEN']) delete process.env[key];
    Object.assign(process.env, { TRANSFORMERS_OFFLINE: '1', HUGGING_FACE_HUB_TOKEN: ' hf_old\n' });
    expect(hubSettings()).toMatchObject({ offline: true, token: 'hf_old' });
    // HF_HUB_OFFLINE, when set, wins: `os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")`.
    Object.assign(process.env, { HF_HUB_OFFLINE: '0', HF_TOKEN: 'hf_new' });
    expect(hubSettings()).toMatchObject({ offline: false, token: 'hf_new' });
  });

  it('falls back to the token `huggingface-cli login` saved, and lets an explicit setting win', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hub-token-'));
    delete process.env.HF_TOKEN;
    process.env.HF_TOKEN_PATH = join(dir, 'token');
    expect(hubSettings().token).toBeUndefined();
    await writeFile(join(dir, 'token'), 'hf_saved\n');
    expect(hubSettings().token).toBe('hf_saved');
    process.env.HF_TOKEN = 'hf_env';
    expect(hubSettings().token).toBe('hf_env');
    await rm(dir, { recursive: true });
    expect(hubSettings({ token: undefined, endpoint: 'http://x' })).toMatchObject({ token: undefined, endpoint: 'http://x' });
  });
});

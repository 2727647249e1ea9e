import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { getHFHubCachePath } from '@huggingface/hub';

/** Where and how models come from the Hub; by default from the environment, as `huggingface_hub` reads it. */
export interface HubSettings {
  /** `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint: string;
  /** `HF_TOKEN`, else the token `huggingface-cli login` saved (`HF_TOKEN_PATH`, else `HF_HOME/token`). */
  token: string | undefined;
  /** `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir: string;
  /** `HF_HUB_OFFLINE=1`: no network at all, the cache only. */
  offline: boolean;
}

const TRUE = new Set(['1', 'on', 'yes', 'true']);

function savedToken(): string | undefined {
  const env = process.env;
  const home = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  try {
    return readFileSync(env.HF_TOKEN_PATH ?? join(home, 'token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function hubSettings(overrides: Partial<HubSettings> = {}): HubSettings {
  const env = process.env;
  return {
    endpoint: (overrides.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token: 'token' in overrides ? overrides.token : env.HF_TOKEN || savedToken(),
    cacheDir: overrides.cacheDir ?? getHFHubCachePath(),
    offline: overrides.offline ?? TRUE.has((env.HF_HUB_OFFLINE ?? '').toLowerCase()),
  };
}

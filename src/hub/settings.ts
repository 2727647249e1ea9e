import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { getHFHubCachePath } from '@huggingface/hub';

/** Where and how models come from the Hub; by default from the environment, as `huggingface_hub` reads it. */
export interface HubSettings {
  /** `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint: string;
  /**
   * `HF_TOKEN` (else the older `HUGGING_FACE_HUB_TOKEN`), else the token `huggingface-cli login`
   * saved (`HF_TOKEN_PATH`, else `HF_HOME/token`).
   */
  token: string | undefined;
  /** `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir: string;
  /** `HF_HUB_OFFLINE=1` (or, when that is unset, `TRANSFORMERS_OFFLINE=1`): no network at all, the cache only. */
  offline: boolean;
}

const TRUE = new Set(['1', 'on', 'yes', 'true']);

/** As huggingface_hub's `_clean_token`: line breaks and surrounding blanks go; nothing left is no token. */
function cleanToken(token: string | undefined): string | undefined {
  return token?.replace(/[\r\n]/g, '').trim() || undefined;
}

function savedToken(): string | undefined {
  const env = process.env;
  const home = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  try {
    return cleanToken(readFileSync(env.HF_TOKEN_PATH ?? join(home, 'token'), 'utf8'));
  } catch {
    return undefined;
  }
}

export function hubSettings(overrides: Partial<HubSettings> = {}): HubSettings {
  const env = process.env;
  return {
    endpoint: (overrides.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    // huggingface_hub's constants.py and _auth.py read these names in this order.
    token: 'token' in overrides ? overrides.token : cleanToken(env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN) || savedToken(),
    cacheDir: overrides.cacheDir ?? getHFHubCachePath(),
    offline: overrides.offline ?? TRUE.has((env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE || '').toLowerCase()),
  };
}

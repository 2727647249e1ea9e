import * as ort from 'onnxruntime-node';
import type { KvData } from './kv-batch.js';

/** Tokens per cached block (vLLM's default block size): prompts share prefixes at this granularity. */
export const PREFIX_BLOCK_TOKENS = 16;

/** The shape of what one cached token holds: `tensors` KV tensors (two per layer) of `[heads, dim]`. */
export interface PrefixKvShape {
  tensors: number;
  heads: number;
  dim: number;
  dtype: 'float32' | 'float16';
}

/**
 * One block of `blockTokens` prompt tokens, under the chain of blocks before it: its key names its
 * parent block and its own token ids, so a key is exact (no hash collision can hand a prompt
 * another's keys and values) and two prompts share a block only when they share everything before it.
 */
interface Block {
  readonly id: number;
  readonly key: string;
  readonly parent: Block | null;
  readonly children: Set<Block>;
  /** `[tensor][head][token][dim]`, float32 values or float16 bits, owned by the cache alone. */
  readonly data: KvData;
}

/** A prompt's longest cached prefix: `tokens` prompt tokens, as the blocks that hold them. */
export interface PrefixHit {
  readonly tokens: number;
  readonly blocks: readonly Block[];
}

/** Where a computed prompt's keys and values sit: row `row` of `[rows, heads, width, dim]` tensors, from column `start`. */
export interface StoredRow {
  kv: readonly KvData[];
  width: number;
  row: number;
  start: number;
}

/**
 * Prompt keys and values kept after their prefill, so a request whose prompt starts with the same
 * tokens (a system prompt, a chat's earlier turns) computes only the rest, as vLLM's automatic
 * prefix caching, SGLang's radix cache, TGI v3 and llama.cpp's slot cache do. Blocks are evicted
 * least recently used first, with everything cached after them, so `bytes` never passes the budget.
 * Everything here is copied in and copied out: no tensor a forward pass gets or gives is ever shared.
 */
export class PrefixCache {
  private readonly blocks = new Map<string, Block>();
  private readonly blockBytes: number;
  private nextId = 0;
  /** Requests that reused a cached prefix, and the prompt tokens they did not recompute. */
  hits = 0;
  hitTokens = 0;

  constructor(
    readonly budgetBytes: number,
    private readonly shape: PrefixKvShape,
    readonly blockTokens = PREFIX_BLOCK_TOKENS,
  ) {
    const { tensors, heads, dim, dtype } = shape;
    this.blockBytes = tensors * heads * blockTokens * dim * (dtype === 'float16' ? 2 : 4);
  }

  get bytes(): number {
    return this.blocks.size * this.blockBytes;
  }

  /** Cached blocks. */
  get size(): number {
    return this.blocks.size;
  }

  /**
   * The longest cached block-aligned prefix of `prompt` that leaves at least one token to compute
   * (its logits give the first new token), or null. The blocks become the most recently used.
   */
  lookup(prompt: readonly number[]): PrefixHit | null {
    const found: Block[] = [];
    let parent: Block | null = null;
    for (let end = this.blockTokens; end < prompt.length; end += this.blockTokens) {
      const block = this.blocks.get(this.keyOf(parent, prompt, end));
      if (!block) break;
      found.push(block);
      parent = block;
    }
    if (found.length === 0) return null;
    this.touch(found);
    return { tokens: found.length * this.blockTokens, blocks: found };
  }

  /** Counts a hit once its prefill starts. */
  recordHit(hit: PrefixHit): void {
    this.hits += 1;
    this.hitTokens += hit.tokens;
  }

  /** The past of a one-row prefill that starts after the hit: fresh `[1, heads, tokens, dim]` tensors. */
  past(hit: PrefixHit): ort.Tensor[] {
    const { tensors, heads, dim, dtype } = this.shape;
    const block = this.blockTokens;
    return Array.from({ length: tensors }, (_, t) => {
      const out = dtype === 'float16' ? new Uint16Array(heads * hit.tokens * dim) : new Float32Array(heads * hit.tokens * dim);
      hit.blocks.forEach((b, i) => {
        for (let h = 0; h < heads; h++) {
          const from = (t * heads + h) * block * dim;
          out.set(b.data.subarray(from, from + block * dim), (h * hit.tokens + i * block) * dim);
        }
      });
      return new ort.Tensor(dtype, out, [1, heads, hit.tokens, dim]);
    });
  }

  /**
   * Keeps the whole blocks of a computed prompt whose keys and values are in `source`. Blocks already
   * cached are only touched; new ones evict the least recently used others, never this prompt's own
   * chain: a prompt longer than the budget keeps its first blocks.
   */
  store(prompt: readonly number[], source: StoredRow): void {
    if (this.blockBytes > this.budgetBytes) return;
    const chain: Block[] = [];
    let parent: Block | null = null;
    for (let end = this.blockTokens; end <= prompt.length; end += this.blockTokens) {
      const key = this.keyOf(parent, prompt, end);
      let block = this.blocks.get(key);
      if (!block) {
        if (!this.makeRoom(new Set(chain))) break;
        block = { id: this.nextId++, key, parent, children: new Set(), data: this.copyBlock(source, end - this.blockTokens) };
        this.blocks.set(key, block);
        parent?.children.add(block);
      }
      chain.push(block);
      parent = block;
    }
    this.touch(chain);
  }

  private keyOf(parent: Block | null, prompt: readonly number[], end: number): string {
    const tokens = prompt.slice(end - this.blockTokens, end).join(',');
    return `${parent?.id ?? ''}:${tokens}`;
  }

  /** Most recent last, and a chain's first blocks after its later ones, so eviction takes the ends of chains first. */
  private touch(chain: readonly Block[]): void {
    for (let i = chain.length - 1; i >= 0; i--) {
      this.blocks.delete(chain[i].key);
      this.blocks.set(chain[i].key, chain[i]);
    }
  }

  /** Evicts until one more block fits; false when only `keep` is left to evict. */
  private makeRoom(keep: ReadonlySet<Block>): boolean {
    while (this.bytes + this.blockBytes > this.budgetBytes) {
      const oldest = this.blocks.values().next().value;
      if (!oldest || keep.has(oldest)) return false;
      this.evict(oldest);
    }
    return true;
  }

  /** A block goes with every block after it, which no prompt could reach any more. */
  private evict(block: Block): void {
    for (const child of block.children) this.evict(child);
    this.blocks.delete(block.key);
    block.parent?.children.delete(block);
  }

  private copyBlock(source: StoredRow, first: number): KvData {
    const { tensors, heads, dim, dtype } = this.shape;
    const block = this.blockTokens;
    const out = dtype === 'float16' ? new Uint16Array(tensors * heads * block * dim) : new Float32Array(tensors * heads * block * dim);
    for (let t = 0; t < tensors; t++) {
      const src = source.kv[t];
      for (let h = 0; h < heads; h++) {
        const from = ((source.row * heads + h) * source.width + source.start + first) * dim;
        out.set(src.subarray(from, from + block * dim), (t * heads + h) * block * dim);
      }
    }
    return out;
  }
}

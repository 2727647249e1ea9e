/**
 * A bounded LRU of compiled grammars with reference counts. xgrammar's own compiler cache has no
 * bound in the web API and WASM memory never shrinks, so it is off and this one decides: an entry
 * in use by a matcher is never freed; the least recently used idle entries go once the cache holds
 * more than `capacity`, and their WASM memory is freed at once (`dispose`).
 */

export interface CacheEntry<T> {
  readonly key: string;
  readonly value: T;
}

interface Slot<T> extends CacheEntry<T> {
  refs: number;
  /** Out of the map (evicted or cleared) while still in use: freed on its last release. */
  dropped: boolean;
}

export class CompiledGrammarCache<T> {
  readonly #capacity: number;
  readonly #dispose: (value: T) => void;
  /** Map order is recency order: the first entry is the least recently used. */
  readonly #slots = new Map<string, Slot<T>>();
  #evictions = 0;

  constructor(capacity: number, dispose: (value: T) => void) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`cache capacity must be a positive integer, got ${capacity}`);
    this.#capacity = capacity;
    this.#dispose = dispose;
  }

  /** Entries held, in use or idle. */
  get size(): number {
    return this.#slots.size;
  }

  get evictions(): number {
    return this.#evictions;
  }

  /** A hit: the entry, referenced once more and now the most recently used. */
  acquire(key: string): CacheEntry<T> | undefined {
    const slot = this.#slots.get(key);
    if (!slot) return undefined;
    this.#slots.delete(key);
    this.#slots.set(key, slot);
    slot.refs++;
    return slot;
  }

  /** Adds a value compiled for `key`, referenced once. */
  insert(key: string, value: T): CacheEntry<T> {
    const old = this.#slots.get(key);
    if (old) this.#drop(old);
    const slot: Slot<T> = { key, value, refs: 1, dropped: false };
    this.#slots.set(key, slot);
    this.#trim();
    return slot;
  }

  release(entry: CacheEntry<T>): void {
    const slot = entry as Slot<T>;
    if (slot.refs <= 0) throw new Error(`CompiledGrammarCache: ${slot.key} released more often than acquired`);
    slot.refs--;
    if (slot.refs === 0 && slot.dropped) this.#dispose(slot.value);
    else this.#trim();
  }

  /** Forgets every entry (their WASM instance is being replaced); those in use are freed on release. */
  clear(): void {
    for (const slot of [...this.#slots.values()]) this.#drop(slot);
  }

  #trim(): void {
    for (const slot of this.#slots.values()) {
      if (this.#slots.size <= this.#capacity) return;
      if (slot.refs === 0) {
        this.#drop(slot);
        this.#evictions++;
      }
    }
  }

  #drop(slot: Slot<T>): void {
    this.#slots.delete(slot.key);
    slot.dropped = true;
    if (slot.refs === 0) this.#dispose(slot.value);
  }
}

/**
 * float16 tensors as raw bits. onnxruntime-common hands float16 data over as a `Uint16Array` before
 * Node 24 and as a `Float16Array` from Node 24 on (when the global exists); both views share the
 * same bytes, so the engine copies and allocates bits only and never depends on which one it got.
 */

/** Data of a float16 tensor, whichever class the runtime chose. */
export type HalfData =
  Uint16Array | { readonly buffer: ArrayBufferLike; readonly byteOffset: number; readonly length: number; readonly BYTES_PER_ELEMENT: 2 };

/** The same bytes as a `Uint16Array`, without a copy. */
export function halfBits(data: HalfData): Uint16Array {
  return data instanceof Uint16Array ? data : new Uint16Array(data.buffer, data.byteOffset, data.length);
}

let table: Float32Array | null = null;

/** Every float16 bit pattern's value: one lookup per element instead of a decode with branches. */
function halfTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) table[h] = sign * 2 ** -14 * (frac / 1024);
    else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
    else table[h] = sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return table;
}

/** `count` float16 values from `start`, widened to float32. */
export function widenHalf(bits: Uint16Array, start: number, count: number): Float32Array {
  const lookup = halfTable();
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = lookup[bits[start + i]];
  return out;
}

/**
 * Imported first by the engine worker, before onnxruntime-node: hides `Float16Array` from this
 * thread. From Node 24 the global exists, and onnxruntime 1.30 then hands float16 tensors over as
 * `Float16Array` and insists on one as input, but its native binding reads such an array as 0 bytes
 * ("not enough space: expected N, got 0"), so every float16 model fails at its first decode step.
 * Without the global, float16 data is a `Uint16Array` of the same bits on every Node line, as it
 * is on Node 20. Only the worker's own realm is affected; nothing else in it uses the global.
 */
delete (globalThis as { Float16Array?: unknown }).Float16Array;

export {};

/**
 * Reads the few gauges the router needs from an upstream's Prometheus text: each wanted name's
 * value, summed over its label sets (vLLM labels its gauges by model). Nothing else is parsed.
 */

/**
 * @example
 * promValues('tgi_queue_size 3\nvllm:num_requests_waiting{model_name="m"} 2\n', ['tgi_queue_size', 'vllm:num_requests_waiting']);
 * // Map { 'tgi_queue_size' => 3, 'vllm:num_requests_waiting' => 2 }
 */
export function promValues(text: string, names: readonly string[]): Map<string, number> {
  const wanted = new Set(names);
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd <= 0) continue;
    const name = line.slice(0, nameEnd);
    if (!wanted.has(name)) continue;
    // The value follows the labels (which may hold spaces inside quotes); an optional timestamp follows it.
    const close = line[nameEnd] === '{' ? line.lastIndexOf('} ') : nameEnd - 1;
    if (close === -1) continue;
    const afterLabels = close + 2;
    const value = Number(line.slice(afterLabels).trim().split(' ')[0]);
    if (Number.isFinite(value)) values.set(name, (values.get(name) ?? 0) + value);
  }
  return values;
}

/**
 * Reads an upstream's event stream: the `data` of each event, joined over its `data` lines as the
 * SSE spec says. Comments (`: keep-alive`) and the other fields carry nothing we use. Lines may end
 * in `\n` or `\r\n`, which is what every upstream we speak to sends.
 */
export class SseDataParser {
  private buffer = '';
  private data: string[] = [];

  /**
   * The events completed by `text`.
   *
   * @example
   * const parser = new SseDataParser();
   * parser.push('data:{"a":1}\n\ndata: [DO'); // ['{"a":1}']
   * parser.push('NE]\n\n');                    // ['[DONE]']
   */
  push(text: string): string[] {
    this.buffer += text;
    const events: string[] = [];
    let end: number;
    while ((end = this.buffer.indexOf('\n')) !== -1) {
      const line = this.buffer.slice(0, end > 0 && this.buffer[end - 1] === '\r' ? end - 1 : end);
      this.buffer = this.buffer.slice(end + 1);
      if (line === '') {
        if (this.data.length > 0) events.push(this.data.join('\n'));
        this.data = [];
      } else if (line.startsWith('data:')) {
        this.data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5));
      }
    }
    return events;
  }
}

/** The data of every event of `body` as it arrives. */
export async function* sseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const parser = new SseDataParser();
  const decoder = new TextDecoder();
  for await (const chunk of body) yield* parser.push(decoder.decode(chunk, { stream: true }));
}

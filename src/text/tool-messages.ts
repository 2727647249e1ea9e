/**
 * A conversation with tools, as chat templates want it (structured-output.md §2.1, §5.3). The calls
 * are written in the hermes format, the one the tool grammar enforces and the route parses back:
 *
 *   <tool_call>
 *   {"name": "get_weather", "arguments": {"city": "Paris"}}
 *   </tool_call>
 *
 * Templates that render tools themselves (Qwen2.5, Hermes, Llama 3.1, SmolLM3) get the messages with
 * `arguments` parsed to objects; templates that know no tools get the tools and the format in a
 * system prompt, and earlier calls and results written out in the same tags.
 */
import { isPlainObject } from '../protocol/json-shape.js';
import type { ChatMessage } from '../types.js';

export const TOOL_CALL_OPEN = '<tool_call>';
export const TOOL_CALL_CLOSE = '</tool_call>';
/**
 * The format's texts that some vocabularies have as special tokens: grammars must be able to write
 * them, and the detokenizer must keep them as text, or a call could not be read.
 */
export const TOOL_CALL_FORMAT_TEXTS: readonly string[] = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE];

/** The generic prompt's lead; TGI's `tool_prompt` replaces it. */
export const DEFAULT_TOOL_PROMPT = 'You may call one or more functions to help with the request.';

/**
 * Whether a chat template renders `tools` itself. A template that never reads the variable gets
 * the generic prompt instead.
 *
 * @example
 * templateKnowsTools('{% if tools %}{{ tools | tojson }}{% endif %}'); // true
 */
export function templateKnowsTools(source: string): boolean {
  return /\btools\b/.test(source);
}

export interface TemplateMessagesOptions {
  /** The template knows no tools: write tools, calls and results into the messages. */
  generic: boolean;
  /** The request's tools in OpenAI's shape; with `generic`, listed in the system prompt. */
  tools?: readonly unknown[];
  /** TGI's `tool_prompt`: the lead sentence of the generic prompt. */
  prompt?: string;
}

/**
 * The messages to render. Assistant `tool_calls[].function.arguments` arrive as JSON strings (how
 * OpenAI sends them) and are parsed to objects, which HF templates expect (`arguments | tojson`);
 * a string that does not parse is kept. With `generic`, the tools and the call format go into the
 * system prompt, earlier calls become `<tool_call>` text, and tool results become a user turn in
 * `<tool_response>` tags.
 *
 * @example
 * templateMessages(messages, { generic: !templateKnowsTools(source), tools });
 */
export function templateMessages(messages: readonly ChatMessage[], options: TemplateMessagesOptions): ChatMessage[] {
  const parsed = messages.map(parseArguments);
  if (!options.generic) return parsed;
  const out: ChatMessage[] = [];
  for (const message of parsed) {
    if (message.role === 'tool') {
      const response = `<tool_response>\n${textOf(message.content)}\n</tool_response>`;
      const last = out.at(-1);
      if (last?.role === 'user' && typeof last.content === 'string' && last.content.endsWith('</tool_response>')) {
        last.content += `\n${response}`;
      } else {
        out.push({ role: 'user', content: response });
      }
    } else if (message.role === 'assistant' && Array.isArray(message.tool_calls) && message.tool_calls.length > 0) {
      const { tool_calls: calls, ...rest } = message;
      const written = calls.map((call) => `${TOOL_CALL_OPEN}\n${writeCall(call)}\n${TOOL_CALL_CLOSE}`);
      const text = textOf(message.content);
      out.push({ ...rest, content: [text, ...written].filter((part) => part !== '').join('\n') });
    } else {
      out.push(message);
    }
  }
  if (!options.tools?.length) return out;
  const prompt = toolPrompt(options.tools, options.prompt ?? DEFAULT_TOOL_PROMPT);
  const first = out[0];
  if (first?.role === 'system') return [{ ...first, content: `${textOf(first.content)}\n\n${prompt}` }, ...out.slice(1)];
  return [{ role: 'system', content: prompt }, ...out];
}

function toolPrompt(tools: readonly unknown[], lead: string): string {
  return [
    lead,
    'The functions are listed below as JSON, one per line, between <tools></tools> tags:',
    '<tools>',
    ...tools.map((tool) => JSON.stringify(tool)),
    '</tools>',
    'To call a function, write its name and a JSON object of arguments between <tool_call></tool_call> tags:',
    TOOL_CALL_OPEN,
    '{"name": "<function-name>", "arguments": <arguments-json-object>}',
    TOOL_CALL_CLOSE,
    'The results come back between <tool_response></tool_response> tags.',
  ].join('\n');
}

function parseArguments(message: ChatMessage): ChatMessage {
  if (message.role !== 'assistant' || !Array.isArray(message.tool_calls)) return message;
  return {
    ...message,
    tool_calls: message.tool_calls.map((call: unknown) => {
      if (!isPlainObject(call) || !isPlainObject(call.function) || typeof call.function.arguments !== 'string') return call;
      try {
        return { ...call, function: { ...call.function, arguments: JSON.parse(call.function.arguments) as unknown } };
      } catch {
        return call;
      }
    }),
  };
}

/** `{"name": ..., "arguments": ...}` as our grammar writes it (arguments already parsed by parseArguments). */
function writeCall(call: unknown): string {
  const fn = isPlainObject(call) && isPlainObject(call.function) ? call.function : {};
  const args = typeof fn.arguments === 'string' ? fn.arguments : JSON.stringify(fn.arguments ?? {});
  return `{"name": ${JSON.stringify(fn.name ?? '')}, "arguments": ${args}}`;
}

/** A message's text: a string, or the text of its parts. */
function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
  return '';
}

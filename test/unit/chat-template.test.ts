import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelLoadError, TemplateError } from '../../src/errors.js';
import { ChatTemplate } from '../../src/text/chat-template.js';
import { SENTENCE_PIECE_CONFIG } from '../fixtures/text/tokenizers.js';

/** SmolLM2-Instruct's tokenizer_config.json `chat_template`, verbatim. */
const SMOLLM2_TEMPLATE =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const smollm = ChatTemplate.fromConfig({ chat_template: SMOLLM2_TEMPLATE, eos_token: '<|im_end|>' })!;

describe('ChatTemplate with the SmolLM2 ChatML template', () => {
  it('renders a system + user conversation byte for byte', () => {
    const prompt = smollm.render({
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Hi!' },
      ],
    });
    expect(prompt).toBe('<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n');
  });

  it('adds the default system prompt to a user-only conversation', () => {
    const prompt = smollm.render({ messages: [{ role: 'user', content: 'What is 2+2?' }] });
    expect(prompt).toBe(
      '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' +
        '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('leaves out the generation prompt when asked', () => {
    const prompt = smollm.render({
      messages: [
        { role: 'system', content: 's' },
        { role: 'user', content: 'u' },
      ],
      addGenerationPrompt: false,
    });
    expect(prompt).toBe('<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n');
  });

  it('joins OpenAI-style text parts into one string', () => {
    const prompt = smollm.render({
      messages: [
        { role: 'system', content: 's' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Hello, ' },
            { type: 'text', text: 'world' },
          ],
        },
      ],
      addGenerationPrompt: false,
    });
    expect(prompt).toBe('<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nHello, world<|im_end|>\n');
  });

  it('refuses content parts that are not text', () => {
    const render = () => smollm.render({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] });
    expect(render).toThrow(TemplateError);
    expect(render).toThrow(/image_url/);
  });
});

describe('ChatTemplate with a Llama 2 template', () => {
  // bos/eos come from tokenizer_config.json as AddedToken objects.
  const llama = ChatTemplate.fromConfig(SENTENCE_PIECE_CONFIG)!;

  it('uses bos_token and eos_token from the config', () => {
    const prompt = llama.render({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: ' How are you? ' },
      ],
    });
    expect(prompt).toBe('<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] How are you? [/INST]');
  });

  it('turns raise_exception(...) into a TemplateError carrying its message', () => {
    const error = (() => {
      try {
        llama.render({ messages: [{ role: 'assistant', content: 'I speak first' }] });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(TemplateError);
    expect(error).toMatchObject({
      message: 'Template error: Conversation roles must alternate user/assistant/user/assistant/...',
      errorType: 'template_error',
      status: 422,
    });
  });

  it('passes chat_template_kwargs through as variables', () => {
    const template = ChatTemplate.fromConfig({ chat_template: '{{ greeting }}, {{ messages[0].content }}' })!;
    expect(template.render({ messages: [{ role: 'user', content: 'x' }], kwargs: { greeting: 'hi' } })).toBe('hi, x');
  });
});

describe('ChatTemplate with named templates', () => {
  const config = {
    bos_token: '<s>',
    chat_template: [
      { name: 'default', template: '{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}' },
      {
        name: 'tool_use',
        template:
          '{{ bos_token }}{% for t in tools %}tool {{ t.function.name }}: {{ t.function.parameters | tojson }}\n{% endfor %}' +
          '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}',
      },
    ],
  };
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const tools = [
    { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
  ];

  it('uses "default" without tools', () => {
    expect(ChatTemplate.fromConfig(config)!.render({ messages })).toBe('<s>user: Weather in Paris?\n');
  });

  it('uses "tool_use" when tools are given, and renders them', () => {
    expect(ChatTemplate.fromConfig(config)!.render({ messages, tools })).toBe(
      '<s>tool get_weather: {"type": "object", "properties": {"city": {"type": "string"}}}\nuser: Weather in Paris?\n',
    );
  });

  it('uses the template named in the options', () => {
    const named = ChatTemplate.fromConfig(config, { name: 'tool_use' })!;
    expect(named.render({ messages, tools: [] })).toBe('<s>user: Weather in Paris?\n');
    expect(() => ChatTemplate.fromConfig(config, { name: 'rag' })).toThrow(/no chat template named "rag".*default, tool_use/);
  });

  it('falls back to "default" when tools are given but there is no "tool_use"', () => {
    const only = ChatTemplate.fromConfig({ chat_template: [{ name: 'default', template: '{{ tools | length }}' }] })!;
    expect(only.render({ messages, tools })).toBe('1');
  });

  it('reports a list without "default" when no name is given', () => {
    const list = ChatTemplate.fromConfig({ chat_template: [{ name: 'rag', template: 'x' }] })!;
    expect(() => list.render({ messages })).toThrow(TemplateError);
    expect(() => list.render({ messages, tools })).toThrow(/none is named "default" \(available: rag\)/);
    expect(ChatTemplate.fromConfig({ chat_template: [{ name: 'rag', template: 'x' }] }, { name: 'rag' })!.render({ messages })).toBe('x');
  });
});

describe('ChatTemplate.fromConfig', () => {
  it('returns null when the config has no template', () => {
    expect(ChatTemplate.fromConfig({})).toBeNull();
    expect(ChatTemplate.fromConfig({ chat_template: [] })).toBeNull();
    expect(ChatTemplate.fromConfig({ chat_template: null })).toBeNull();
  });

  it('reports a template that does not parse as a TemplateError when it is used', () => {
    const broken = ChatTemplate.fromConfig({ chat_template: '{% for message in messages %}{{ message.content }}' })!;
    expect(() => broken.render({ messages: [{ role: 'user', content: 'x' }] })).toThrow(TemplateError);
    expect(() => broken.render({ messages: [] })).toThrow(/^Template error: /);
  });
});

describe('ChatTemplate.load', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'si-template-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads chat_template.jinja or chat_template.json when tokenizer_config.json has none', async () => {
    const messages = [{ role: 'user', content: 'Hi' }];
    expect(await ChatTemplate.load(dir, {})).toBeNull();
    await writeFile(join(dir, 'chat_template.json'), JSON.stringify({ chat_template: 'json:{{ messages[0].content }}' }));
    expect((await ChatTemplate.load(dir, {}))!.render({ messages })).toBe('json:Hi');
    await writeFile(join(dir, 'chat_template.jinja'), 'jinja:{{ messages[0].content }}');
    expect((await ChatTemplate.load(dir, {}))!.render({ messages })).toBe('jinja:Hi');
    // tokenizer_config.json's own template wins.
    expect((await ChatTemplate.load(dir, { chat_template: 'config:{{ messages[0].content }}' }))!.render({ messages })).toBe('config:Hi');
  });

  it('refuses a chat_template.json that is not JSON as a load error naming the file', async () => {
    await writeFile(join(dir, 'chat_template.json'), '{"chat_template": "unterminated');
    const error = await ChatTemplate.load(dir, {}).catch((e: unknown) => e);
    expect(ModelLoadError.isInstance(error)).toBe(true);
    expect((error as Error).message).toMatch(/chat_template\.json is not valid JSON: .*expected an object with a chat_template/);
  });
});

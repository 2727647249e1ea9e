/** The JSON files of a model directory (configs, tokenizer, chat template), read and refused one way. */
import { readFile } from 'node:fs/promises';
import { ModelLoadError } from './errors.js';
import { isPlainObject, type JsonObject, typeName } from './protocol/json-shape.js';

/**
 * A JSON object file, or undefined when the file does not exist. `expected` says what it should
 * hold, for the error message.
 *
 * @throws ModelLoadError naming the file when it cannot be read, is not JSON, or holds no object.
 * @example
 * const config = await readJsonObject(join(dir, 'config.json'), 'the model configuration');
 */
export async function readJsonObject(file: string, expected = 'a JSON object'): Promise<JsonObject | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelLoadError(`Cannot read ${file}: ${(error as Error).message}`, error);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ModelLoadError(`${file} is not valid JSON: ${(error as Error).message}; expected ${expected}`, error);
  }
  if (!isPlainObject(value)) throw new ModelLoadError(`${file} is not a JSON object (got ${typeName(value)}): expected ${expected}`);
  return value;
}

/**
 * Loads `@mlc-ai/web-xgrammar` (pinned to 0.1.27) and makes WASM instances of it.
 *
 * Three things about that package shape this file (structured-output.md §3.1.1, §3.1.4):
 * - `lib/index.js` is a UMD bundle that calls `require()`, inside a `"type": "module"` package, so
 *   a plain `import` fails in Node ("require is not defined in ES module scope"). We evaluate the
 *   file as CommonJS ourselves, once, on the first grammar request.
 * - Its wrapper keeps one WASM instance in a closure and is async only to await that instance. We
 *   need several instances (an aborted one must be thrown away) and synchronous calls in the
 *   sampling loop, so one line is added to the evaluated source to export emscripten's module
 *   factory; everything else uses the embind classes directly.
 * - Any bad input makes the C++ code abort (or throw a C++ exception, or overflow its stack). An
 *   abort throws `RuntimeError: Aborted()` after printing the reason (`[FATAL] file.cc:75: Regex
 *   parsing error ...`) to its stderr, which we capture per instance instead of letting it reach
 *   the console. The abort throws through the C++ frames without unwinding them, so the WASM stack
 *   pointer stays where the failed call left it: each abort leaked 0.8–1.5 KiB of the 64 KiB stack,
 *   and that is what broke an instance after 50–80 aborts (measured here). The module is therefore
 *   compiled with its stack pointer exported, and `guard` puts it back after a failure.
 */
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { ModelLoadError } from '../errors.js';

/** The parts of the embind API we call. Handles must be `delete()`d: they live in WASM memory. */
export interface WasmHandle {
  delete(): void;
}
export interface VectorHandle extends WasmHandle {
  size(): number;
}
export type GrammarHandle = WasmHandle;
export type TokenizerInfoHandle = WasmHandle;
export type CompiledGrammarHandle = WasmHandle;
export interface CompilerHandle extends WasmHandle {
  CompileGrammar(grammar: GrammarHandle): CompiledGrammarHandle;
  CompileStructuralTag(json: string): CompiledGrammarHandle;
}
export interface MatcherHandle extends WasmHandle {
  AcceptToken(id: number, verbose: boolean): boolean;
  AcceptString(text: string, verbose: boolean): boolean;
  GetNextTokenBitmask(vocabSize: number): VectorHandle;
  IsTerminated(): boolean;
}

export interface XgrammarInstance {
  readonly Grammar: {
    FromEBNF(ebnf: string, rootRule: string): GrammarHandle;
    FromStructuralTag(json: string): GrammarHandle;
  };
  readonly TokenizerInfo: new (
    vocab: VectorHandle,
    vocabType: string,
    vocabSize: number,
    stopTokenIds: VectorHandle | undefined,
    prependSpace: boolean,
  ) => TokenizerInfoHandle;
  readonly GrammarCompiler: new (info: TokenizerInfoHandle, maxThreads: number, cacheEnabled: boolean) => CompilerHandle;
  readonly GrammarMatcher: new (
    compiled: CompiledGrammarHandle,
    stopTokenIds: VectorHandle | undefined,
    terminateWithoutStopToken: boolean,
    maxRollbackTokens: number,
  ) => MatcherHandle;
  readonly JSONFormat: { kJSON: unknown };
  /** JSON schema → EBNF text. `indent` undefined = one line; `separators` [comma, colon]. */
  _JSONSchemaToEBNF(
    schema: string,
    anyWhitespace: boolean,
    indent: number | undefined,
    separators: { first: string; second: string } | undefined,
    strictMode: boolean,
    maxWhitespaceCnt: number | undefined,
    format: unknown,
  ): string;
  vecStringFromJSArray(values: string[]): VectorHandle;
  vecIntFromJSArray(values: number[]): VectorHandle;
  /** A view of the vector's elements in WASM memory, valid until the next allocation. */
  vecIntToView(vector: VectorHandle): Int32Array;
  readonly HEAP8: Int8Array;
}

/** An instance plus what it printed to stderr, for error messages. */
export interface XgrammarRuntime {
  readonly wasm: XgrammarInstance;
  /** Takes (and clears) the reason printed before the last abort, without the source location. */
  takeError(): string | null;
  /**
   * Runs `call`; when it throws, the WASM stack pointer is put back where it was before rethrowing,
   * so that an aborted call leaves the instance's stack as it found it (a few bytes of heap that
   * the abort did not free stay leaked: 5,000 aborts did not grow the memory).
   */
  guard<T>(call: () => T): T;
}

/** The WebAssembly API as we use it (the project compiles without the DOM lib that types it). */
type WasmModule = object;
interface WasmInstance {
  exports: Record<string, unknown>;
}
/** The stack pointer, as `exportStackPointer` exports it. */
interface WasmGlobal {
  value: number;
}
const { WebAssembly: webAssembly } = globalThis as unknown as {
  WebAssembly: {
    compile(bytes: Uint8Array): Promise<WasmModule>;
    instantiate(module: WasmModule, imports: object): Promise<WasmInstance>;
  };
};

interface ModuleArg {
  print(text: string): void;
  printErr(text: string): void;
  /** emscripten's hook for bringing our own instance of the WASM module. */
  instantiateWasm(imports: object, receive: (instance: WasmInstance, module: WasmModule) => void): object;
}
type ModuleFactory = (moduleArg: ModuleArg) => Promise<XgrammarInstance>;

const PACKAGE = '@mlc-ai/web-xgrammar';
const ANCHOR = 'let binding = null;';
const EMBEDDED_WASM = /wasmBinaryFile="data:application\/octet-stream;base64,([A-Za-z0-9+/=]+)"/;
let loaded: { factory: ModuleFactory; wasm: Promise<WasmModule> } | null = null;

/**
 * Evaluates the package's bundle as CommonJS and compiles its embedded WASM, once: each instance
 * after that only instantiates the compiled module (a few ms instead of a compile).
 */
function load(): { factory: ModuleFactory; wasm: Promise<WasmModule> } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  let path: string;
  try {
    // No `exports` map in the package, so the deep path resolves.
    path = require.resolve(`${PACKAGE}/lib/index.js`);
  } catch (error) {
    throw new ModelLoadError(`Grammars need the ${PACKAGE} package, which is not installed: ${(error as Error).message}`, error);
  }
  const source = readFileSync(path, 'utf8');
  const embedded = EMBEDDED_WASM.exec(source);
  if (!source.includes(ANCHOR) || !embedded) {
    throw new ModelLoadError(`${path} is not the ${PACKAGE} build this library supports (0.1.27)`);
  }
  const bundle = new Module(path) as Module & { _compile(code: string, filename: string): void };
  bundle.filename = path;
  bundle.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(dirname(path));
  bundle._compile(source.replace(ANCHOR, `${ANCHOR} exports.createModule = Module;`), path);
  loaded = {
    factory: (bundle.exports as { createModule: ModuleFactory }).createModule,
    wasm: webAssembly.compile(exportStackPointer(Buffer.from(embedded[1], 'base64'), path)),
  };
  return loaded;
}

/** A fresh WASM instance, with its own linear memory (~16 MiB). */
export async function createXgrammarRuntime(): Promise<XgrammarRuntime> {
  let lastError: string | null = null;
  const printErr = (text: string): void => {
    const fatal = /^\[FATAL\][^:]*:\d+: (.*)$/s.exec(text);
    if (fatal) lastError = fatal[1].replace(/^Check failed: \(.*?\) is false: /s, '');
  };
  // xgrammar prints warnings to stdout (e.g. about vocabulary detection): not our console's business.
  const { factory, wasm: compiled } = load();
  // emscripten only sees failures the hook throws at once: a later one must reject our promise itself.
  let failed!: (error: unknown) => void;
  let stackPointer!: WasmGlobal;
  const failure = new Promise<never>((_, reject) => (failed = reject));
  const wasm = await Promise.race([
    factory({
      print: () => {},
      printErr,
      instantiateWasm(imports, receive) {
        compiled
          .then((module) =>
            webAssembly.instantiate(module, imports).then((instance) => {
              stackPointer = instance.exports[STACK_POINTER_EXPORT] as WasmGlobal;
              receive(instance, module);
            }),
          )
          .catch(failed);
        return {};
      },
    }),
    failure,
  ]);
  return {
    wasm,
    takeError() {
      const error = lastError;
      lastError = null;
      return error;
    },
    guard(call) {
      const saved = stackPointer.value;
      try {
        return call();
      } catch (error) {
        stackPointer.value = saved;
        throw error;
      }
    },
  };
}

const STACK_POINTER_EXPORT = 'sp';

/**
 * The module's bytes with its first global, emscripten's `__stack_pointer`, also exported (as
 * `sp`): an export entry appended to the export section, nothing else changed. Checks that the
 * global is there and is what emscripten makes it (a mutable i32, with no imported global before
 * it), so another build is refused rather than patched blindly.
 */
function exportStackPointer(bytes: Uint8Array, path: string): Uint8Array {
  const refuse = (why: string) => new ModelLoadError(`${path}: cannot export the WASM stack pointer (${why}); expected ${PACKAGE} 0.1.27`);
  let at = 8;
  const u32 = (): number => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[at++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  const leb = (value: number): number[] => {
    const out: number[] = [];
    do {
      const low = value % 0x80;
      value = Math.floor(value / 0x80);
      out.push(value > 0 ? low | 0x80 : low);
    } while (value > 0);
    return out;
  };
  const name = (): string => {
    const length = u32();
    at += length;
    return Buffer.from(bytes.subarray(at - length, at)).toString('utf8');
  };
  let stackGlobal = false;
  while (at < bytes.length) {
    const sectionStart = at;
    const id = bytes[at++];
    const size = u32();
    const start = at;
    if (id === 2) {
      // Imports: an imported global would take index 0.
      for (let n = u32(); n > 0; n--) {
        name();
        name();
        const kind = bytes[at++];
        if (kind === 3) throw refuse('it imports a global');
        if (kind === 0) u32();
        else if (kind === 1 || kind === 2) {
          if (kind === 1) at++;
          const limits = bytes[at++];
          u32();
          if (limits & 1) u32();
        } else throw refuse(`unknown import kind ${kind}`);
      }
    } else if (id === 6) {
      stackGlobal = u32() > 0 && bytes[at] === 0x7f && bytes[at + 1] === 0x01;
    } else if (id === 7) {
      if (!stackGlobal) throw refuse('its first global is not a mutable i32');
      const count = u32();
      const entries = bytes.subarray(at, start + size);
      for (let n = count; n > 0; n--) {
        if (name() === STACK_POINTER_EXPORT) throw refuse(`it already exports "${STACK_POINTER_EXPORT}"`);
        at++;
        u32();
      }
      const entry = [...leb(STACK_POINTER_EXPORT.length), ...Buffer.from(STACK_POINTER_EXPORT), 3, ...leb(0)];
      const body = [...leb(count + 1), ...entries, ...entry];
      return Buffer.concat([bytes.subarray(0, sectionStart), Buffer.from([7, ...leb(body.length), ...body]), bytes.subarray(start + size)]);
    }
    at = start + size;
  }
  throw refuse('it has no export section');
}

/**
 * How a call into xgrammar failed, if it was xgrammar that failed:
 * - `refused`: a failed check (`RuntimeError: Aborted()`) or a C++ exception (a bare number: the
 *   build has no JS exception support). The instance still works, a little more worn each time.
 * - `broken`: a trap (out-of-bounds access, a call through a bad table index) or a stack overflow,
 *   which is what deep nesting does to its 64 KiB stack. Nothing that instance does can be trusted.
 * - `null`: not xgrammar's failure (a bug of ours), to be rethrown.
 */
export function wasmFailure(error: unknown): 'refused' | 'broken' | null {
  if (typeof error === 'number' || (error instanceof Error && error.message.startsWith('Aborted('))) return 'refused';
  if (error instanceof RangeError || (error instanceof Error && error.constructor.name === 'RuntimeError')) return 'broken';
  return null;
}

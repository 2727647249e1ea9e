// The lint gate `npm test` runs. Besides typescript-eslint's recommended rules and its type-aware
// promise rules, it enforces the house layering: the core (`src/`) never imports a web framework,
// the engine never imports the HTTP layer, and no module cycles; and no `!` in the HTTP layer,
// the protocol encoders and the adapters.
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

const FRAMEWORKS = ['express', 'express4', 'koa', 'koa2', 'koa-mount', '@koa/*', 'supertest'];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.fixtures/', 'bench/results/', 'test-results/', 'examples/demo/public/', '.*'] },
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    // Resolves the `.js` specifiers of TypeScript sources to their `.ts` files, so cycles are seen.
    settings: {
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver-next': [createTypeScriptImportResolver()],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: FRAMEWORKS, message: 'The core never imports a web framework: adapters/ do.' }] },
      ],
    },
  },
  {
    // The route glue and the wire formats state their invariants in types, not in `!` (issue 10).
    files: ['src/http/**/*.ts', 'src/protocol/**/*.ts', 'adapters/**/*.ts'],
    rules: { '@typescript-eslint/no-non-null-assertion': 'error' },
  },
  {
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: FRAMEWORKS, message: 'The core never imports a web framework: adapters/ do.' },
            { group: ['**/http/*', '**/http'], message: 'The engine does not import the HTTP layer.' },
          ],
        },
      ],
    },
  },
  {
    // Tests read JSON bodies of every shape, hostile ones included.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);

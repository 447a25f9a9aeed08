// Lint rules for PodMotion: typescript-eslint's recommended set plus the few rules the style guide leans on.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': ['error', { selector: 'TSEnumDeclaration', message: 'Use string-literal unions, not enums.' }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // The inspector's page runs in the browser.
    files: ['inspector/static/**/*.js'],
    languageOptions: {
      sourceType: 'module',
      globals: { document: 'readonly', Node: 'readonly', fetch: 'readonly', EventSource: 'readonly', setInterval: 'readonly', setTimeout: 'readonly' },
    },
  },
  {
    // Tests read JSON the CLI printed; typing every shape there adds noise, not safety.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['machines/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: ['node:*', '../bus/*', '../node-runtime/*', '../criu-shim/*', '../bpf/*'],
      }],
    },
  },
);

/** Argument parsing on node:util parseArgs, with the options every command shares. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './output.js';
import { CLUSTER_NAME_PATTERN, DEFAULT_CLUSTER, NAME_PATTERN } from '../node-runtime/constants.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** Options accepted by every command. */
export const COMMON: Options = {
  json: { type: 'boolean', default: false },
  cluster: { type: 'string' },
  nats: { type: 'string' },
  nkey: { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
};

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  /** Everything after a literal `--` (a pod's command). */
  rest: string[];
}

/** Parses argv for one command; an unknown flag becomes a one-line usage error. */
export function parse(argv: string[], options: Options): Parsed {
  const dd = argv.indexOf('--');
  const head = dd >= 0 ? argv.slice(0, dd) : argv;
  const rest = dd >= 0 ? argv.slice(dd + 1) : [];
  try {
    const r = parseArgs({ args: head, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals, rest };
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}

/** The cluster a command addresses: --cluster, then PODMOTION_CLUSTER, then the default; always a valid name. */
export function clusterName(p: Parsed): string {
  const name = (p.values['cluster'] as string | undefined) ?? process.env['PODMOTION_CLUSTER'] ?? DEFAULT_CLUSTER;
  if (!CLUSTER_NAME_PATTERN.test(name)) throw new UsageError(`cluster name "${name}" must be 1-12 lowercase letters or digits, starting with a letter`);
  return name;
}

/** A pod or node name from the command line, checked before it goes anywhere. */
export function checkName(kind: 'pod' | 'node', name: string): string {
  if (!NAME_PATTERN.test(name)) throw new UsageError(`${kind} name "${name}" must be lowercase letters, digits and '-' (at most 40)`);
  return name;
}

/** A whole number option within bounds, or a usage error naming the flag. */
export function intOption(p: Parsed, name: string, dflt: number, min: number, max: number): number {
  const raw = p.values[name];
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be a whole number from ${min} to ${max} (got ${String(raw)})`);
  return n;
}

export function requirePositional(p: Parsed, index: number, what: string): string {
  const v = p.positionals[index];
  if (!v) throw new UsageError(`missing ${what}`);
  return v;
}

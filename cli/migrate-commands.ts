/** `podmotion migrate|status|describe|cancel|list`: the migration verbs, over the coordinator's API. */
import type { NatsConnection } from '@nats-io/nats-core';
import { request } from '../bus/rpc.js';
import { Subjects } from '../bus/subjects.js';
import { apiCodecs as c } from '../actors/coordinator/codecs.js';
import type { MigrateRequest, ProgressEvent } from '../bus/api.js';
import { PHASES, STRATEGIES, outcomeOf, phaseLabel, type MigrationStatus, type Phase, type Strategy } from '../machines/index.js';
import { checkName, intOption, parse, requirePositional } from './args.js';
import { withCluster } from './context.js';
import { printJson, printTable, UsageError } from './output.js';
import { followMigration } from './watch.js';

/** The product page's default for --timeout: ten minutes. */
const DEFAULT_WAIT_S = 600;

/**
 * Starts a migration and follows it to its end, calling onCondition once per finished phase. The one
 * path the CLI, the demo and the tests share.
 */
export async function runMigration(nc: NatsConnection, req: MigrateRequest, timeoutMs: number,
  onStart: (s: MigrationStatus) => void, onCondition: (s: MigrationStatus, phase: Phase) => void,
  onProgress?: (p: ProgressEvent) => void): Promise<MigrationStatus> {
  const started = (await request(nc, Subjects.api('migrate'), c.migrate, c.statusReply, req, { timeoutMs: 15_000 })).status as MigrationStatus;
  onStart(started);
  const shown = new Set<Phase>();
  return followMigration(nc, started.spec.id, timeoutMs, (s) => {
    for (const cond of s.conditions) {
      if (cond.status !== 'Unknown' && !shown.has(cond.type)) {
        shown.add(cond.type);
        onCondition(s, cond.type);
      }
    }
  }, onProgress);
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** One line per pre-copy round, shown live under the phases. */
export function printProgress(p: ProgressEvent): void {
  process.stdout.write(`      round ${p.round}: ${mib(p.dataRemainingBytes)} MiB changed · ${mib(p.dataProcessedBytes)} MiB sent · ` +
    `dirty ${mib(p.dirtyMemoryRateBytes)} MiB/s · ${mib(p.memoryTransferRateBytes)} MiB/s\n`);
}

export function printCondition(s: MigrationStatus, phase: Phase): void {
  const cond = s.conditions.find((x) => x.type === phase);
  if (!cond) return;
  const mark = cond.status === 'True' ? (cond.reason === 'Skipped' ? '–' : '✓') : '✗';
  const ms = cond.durationMs === undefined ? '' : ` ${cond.durationMs} ms`;
  const why = cond.status === 'False' ? `  ${cond.message}` : cond.reason === 'Skipped' ? '  skipped' : '';
  process.stdout.write(`  ${mark} ${phaseLabel(phase).padEnd(26)}${ms.padStart(9)}${why}\n`);
}

export function summaryLine(s: MigrationStatus): string {
  const o = outcomeOf(s);
  if (s.phase === 'Complete') {
    const conn = o.connections === undefined ? '' : ` · TCP preserved: ${o.preserved}/${o.connections} connections · seq_delta=${o.seqDeltaMax} · ${o.rst} RST`;
    return `✓ Migration complete · Pod running on: ${s.spec.destinationNode} · Freeze window: ${o.freezeMs ?? '?'} ms${conn}`;
  }
  if (s.phase === 'Validated') return `✓ Dry run passed: ${s.spec.pod} can move ${s.spec.sourceNode} → ${s.spec.destinationNode}`;
  const err = s.error ? `: ${s.error.phase}: ${s.error.message}` : '';
  const where = s.phase !== 'Failed' ? s.spec.sourceNode : s.error?.servedFrom ?? 'see podmotion describe';
  return `✗ Migration ${s.phase}${err} · Pod running on: ${where}`;
}

async function migrateCmd(argv: string[]): Promise<number> {
  const p = parse(argv, {
    'to-node': { type: 'string' }, strategy: { type: 'string' }, 'dry-run': { type: 'boolean', default: false },
    wait: { type: 'boolean', default: false }, timeout: { type: 'string' }, 'no-network-continuity': { type: 'boolean', default: false },
    'bandwidth-mbps': { type: 'string' }, 'fail-at': { type: 'string' }, 'pause-at': { type: 'string' },
    'allow-post-copy': { type: 'boolean', default: false },
  });
  const json = p.values['json'] === true;
  const pod = checkName('pod', requirePositional(p, 0, 'pod name (podmotion migrate POD [--to-node NODE])'));
  if (p.values['to-node'] !== undefined) checkName('node', p.values['to-node'] as string);
  const strategy = p.values['strategy'] as string | undefined;
  if (strategy !== undefined && !STRATEGIES.includes(strategy as Strategy)) throw new UsageError(`--strategy must be one of ${STRATEGIES.join(', ')} (got ${strategy})`);
  const failAt = p.values['fail-at'] as string | undefined;
  const pauseAt = p.values['pause-at'] as string | undefined;
  for (const [flag, v] of [['fail-at', failAt], ['pause-at', pauseAt]] as const) {
    if (v !== undefined && !(PHASES as readonly string[]).includes(v)) throw new UsageError(`--${flag} must be a phase (got ${v})`);
  }
  const timeoutS = intOption(p, 'timeout', DEFAULT_WAIT_S, 1, 86_400);
  const req: MigrateRequest = {
    pod, dryRun: p.values['dry-run'] === true, networkContinuity: p.values['no-network-continuity'] !== true,
    ...(p.values['to-node'] ? { toNode: p.values['to-node'] as string } : {}),
    ...(strategy ? { strategy: strategy as Strategy } : {}),
    ...(p.values['bandwidth-mbps'] !== undefined ? { bandwidthMbps: intOption(p, 'bandwidth-mbps', 0, 1, 1_000_000) } : {}),
    ...(p.values['allow-post-copy'] === true ? { allowPostCopy: true } : {}),
    ...(failAt ? { failAt: failAt as Phase } : {}),
    ...(pauseAt ? { pauseAt: pauseAt as Phase } : {}),
  };
  return withCluster(p, async (ctx) => {
    // Scripts asking for JSON without --wait get the accepted migration at once and follow it with status.
    if (json && p.values['wait'] !== true) {
      const started = (await request(ctx.nc, Subjects.api('migrate'), c.migrate, c.statusReply, req, { timeoutMs: 15_000 })).status as MigrationStatus;
      printJson({ ...started, outcome: outcomeOf(started) });
      return 0;
    }
    const final = await runMigration(ctx.nc, req, timeoutS * 1000, (started) => {
      const spec = started.spec;
      if (!json) process.stdout.write(`migration ${spec.id}: ${spec.pod} ${spec.sourceNode} → ${spec.destinationNode} (${spec.strategy}${spec.dryRun ? ', dry run' : ''})\n`);
      const queued = started.conditions.find((x) => x.type === 'Pending' && x.reason === 'Queued');
      if (!json && queued) process.stdout.write(`  … queued: ${queued.message}\n`);
    }, (s, phase) => {
      if (!json) printCondition(s, phase);
    }, (prog) => {
      if (!json) printProgress(prog);
    });
    if (json) printJson({ ...final, outcome: outcomeOf(final) });
    else process.stdout.write(summaryLine(final) + '\n');
    return final.phase === 'Complete' || final.phase === 'Validated' ? 0 : 1;
  });
}

async function statusCmd(argv: string[], full: boolean): Promise<number> {
  const p = parse(argv, {});
  const id = requirePositional(p, 0, 'migration name (see: podmotion list)');
  return withCluster(p, async (ctx) => {
    const s = (await request(ctx.nc, Subjects.api('status'), c.ref, c.statusReply, { id })).status as MigrationStatus;
    if (p.values['json']) {
      printJson({ ...s, outcome: outcomeOf(s) });
      return 0;
    }
    const o = outcomeOf(s);
    if (!full) {
      process.stdout.write(`Phase: ${s.phase} · Pod: ${s.spec.pod} · ${s.spec.sourceNode} → ${s.spec.destinationNode}` +
        `${o.freezeMs !== undefined ? ` · Freeze window: ${o.freezeMs} ms` : ''}\n`);
      if (o.connections !== undefined) process.stdout.write(`TCP preserved: ${o.preserved}/${o.connections} connections · seq_delta=${o.seqDeltaMax} · ${o.rst} RST\n`);
      if (s.error) process.stdout.write(`Error in ${s.error.phase}: ${s.error.message}\n`);
      const queued = s.phase === 'Pending' ? s.conditions.find((x) => x.type === 'Pending') : undefined;
      if (queued) process.stdout.write(`Queued: ${queued.message}\n`);
      return 0;
    }
    process.stdout.write(`Name:      ${s.spec.id}\nPod:       ${s.spec.pod}\nFrom:      ${s.spec.sourceNode}\nTo:        ${s.spec.destinationNode}\n` +
      `Strategy:  ${s.spec.strategy}\nContinuity: ${s.spec.networkContinuity}\nPhase:     ${s.phase}\n` +
      `Started:   ${new Date(s.startedAtMs).toISOString()}\n${s.endedAtMs ? `Ended:     ${new Date(s.endedAtMs).toISOString()}\n` : ''}` +
      `${s.error ? `Error:     ${s.error.phase}: ${s.error.message}\n` : ''}Conditions:\n`);
    printTable(['  TYPE', 'STATUS', 'REASON', 'DURATION', 'SINCE', 'MESSAGE'], s.conditions.map((x) => [
      `  ${x.type}`, x.status, x.reason, x.durationMs === undefined ? undefined : `${x.durationMs}ms`, new Date(x.lastTransitionTimeMs).toISOString(), x.message,
    ]));
    return 0;
  });
}

async function cancelCmd(argv: string[]): Promise<number> {
  const p = parse(argv, {});
  const id = requirePositional(p, 0, 'migration name');
  return withCluster(p, async (ctx) => {
    const r = await request(ctx.nc, Subjects.api('cancel'), c.ref, c.cancelReply, { id });
    if (p.values['json']) printJson(r);
    else if (r.accepted) process.stdout.write(`${r.message}\n`);
    else process.stderr.write(`podmotion: ${r.message}\n`);
    return r.accepted ? 0 : 1;
  });
}

async function listCmd(argv: string[]): Promise<number> {
  const p = parse(argv, { active: { type: 'boolean', default: false } });
  return withCluster(p, async (ctx) => {
    const r = await request(ctx.nc, Subjects.api('list'), c.listReq, c.listReply, { active: p.values['active'] === true });
    if (p.values['json']) printJson(r);
    else if (r.migrations.length === 0) process.stdout.write('no migrations\n');
    else printTable(['NAME', 'POD', 'FROM', 'TO', 'STRATEGY', 'PHASE', 'FREEZE'], r.migrations.map((m) => [m.id, m.pod, m.sourceNode, m.destinationNode, m.strategy, m.phase, m.freezeMs === undefined ? undefined : `${m.freezeMs}ms`]));
    return 0;
  });
}

async function estimateCmd(argv: string[]): Promise<number> {
  const p = parse(argv, { 'to-node': { type: 'string' }, strategy: { type: 'string' } });
  const pod = checkName('pod', requirePositional(p, 0, 'pod name (podmotion estimate POD [--to-node NODE])'));
  const toNode = p.values['to-node'] === undefined ? undefined : checkName('node', p.values['to-node'] as string);
  const strategy = p.values['strategy'] as string | undefined;
  if (strategy !== undefined && !STRATEGIES.includes(strategy as Strategy)) throw new UsageError(`--strategy must be one of ${STRATEGIES.join(', ')} (got ${strategy})`);
  return withCluster(p, async (ctx) => {
    const e = await request(ctx.nc, Subjects.api('estimate'), c.estimateReq, c.estimateReply,
      { pod, ...(toNode ? { toNode } : {}), ...(strategy ? { strategy: strategy as Strategy } : {}) }, { timeoutMs: 90_000 });
    if (p.values['json']) {
      printJson(e);
      return e.migratable ? 0 : 1;
    }
    const mb = (b?: number) => (b === undefined ? '-' : `${(b / 1e6).toFixed(1)} MB`);
    process.stdout.write(`Migratable: ${e.migratable ? 'Yes' : 'No'}${e.reasons.length ? ` (${e.reasons.join('; ')})` : ''}\n` +
      `Route: ${e.sourceNode ?? '?'} → ${e.destinationNode ?? '?'} · Strategy: ${e.strategy}\n` +
      `Storage tier: ${e.storageTier}\nMemory to move: ${mb(e.memoryBytes)} · Connections: ${e.connections ?? '-'}\n` +
      `Dirty-page rate: ${e.dirtyBytesPerSec === undefined ? '-' : `${(e.dirtyBytesPerSec / 1e6).toFixed(1)} MB/s`}\n` +
      `Predicted freeze window: ${e.predictedFreezeMs === undefined ? '-' : `~${e.predictedFreezeMs} ms`} (${e.predictionBasis})\n`);
    return e.migratable ? 0 : 1;
  });
}

export async function migrationCommand(verb: string, argv: string[]): Promise<number> {
  switch (verb) {
    case 'estimate': return estimateCmd(argv);
    case 'migrate': return migrateCmd(argv);
    case 'status': return statusCmd(argv, false);
    case 'describe': return statusCmd(argv, true);
    case 'cancel': return cancelCmd(argv);
    case 'list': return listCmd(argv);
    default: throw new UsageError(`unknown command ${verb}`);
  }
}

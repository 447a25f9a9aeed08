/**
 * `podmotion demo`: the main job on the embedded default. A 3-node local cluster, a stateful TCP pod with 8
 * client connections under continuous load from the client namespace, migrated node-1 → node-2 → node-3 →
 * node-1 (and on round the ring with --migrations N) while the client checks every reply. Prints each migration's phases, freeze window, client-visible
 * stall and connection figures, then a summary; `--json` prints the same as one object.
 */
import { clusterDown, clusterUp, adminBus } from '../node-runtime/local-cluster.js';
import { clusterNamespaces } from '../node-runtime/fabric.js';
import { connectBus } from '../bus/connection.js';
import { request } from '../bus/rpc.js';
import { Subjects } from '../bus/subjects.js';
import { codecs } from '../node-runtime/agent.js';
import { outcomeOf, type MigrationStatus } from '../machines/index.js';
import { registrations } from './context.js';
import { clusterName, intOption, parse } from './args.js';
import { printJson, printTable } from './output.js';
import { PYTHON, WORKLOADS, startLoad, type LoadClient } from './load.js';
import { printCondition, runMigration } from './migrate-commands.js';
import path from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { release } from 'node:os';

const DEMO_CLUSTER = 'demo';
const POD = 'counter';
const PORT = 7000;
const CONNECTIONS = 8;
/** One migration of a small pod takes about a second; a minute means something is stuck. */
const MIGRATION_TIMEOUT_MS = 120_000;

export interface DemoMigration {
  name: string; pod: string; from: string; to: string; phase: string;
  freezeMs: number | null; clientMaxStallMs: number; connections: number; preserved: number;
  seqDeltaMax: number | null; rst: number | null; clientErrors: number;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return Math.round((s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2) * 10) / 10;
}

export function summarize(ms: DemoMigration[]) {
  const freezes = ms.map((m) => m.freezeMs).filter((x): x is number => x !== null);
  const stalls = ms.map((m) => m.clientMaxStallMs);
  return {
    migrations: ms.length,
    complete: ms.filter((m) => m.phase === 'Complete').length,
    freezeMsMedian: median(freezes), freezeMsMax: freezes.length ? Math.max(...freezes) : null,
    clientMaxStallMsMedian: median(stalls), clientMaxStallMsMax: stalls.length ? Math.max(...stalls) : null,
    connectionsKept: ms.every((m) => m.preserved === m.connections && m.connections === CONNECTIONS),
    seqDeltaMax: Math.max(0, ...ms.map((m) => m.seqDeltaMax ?? 0)),
    rst: ms.reduce((a, m) => a + (m.rst ?? 0), 0),
    clientErrors: ms.reduce((a, m) => a + m.clientErrors, 0),
  };
}

export async function demoCommand(argv: string[]): Promise<number> {
  const p = parse(argv, { migrations: { type: 'string' }, out: { type: 'string' } });
  const json = p.values['json'] === true;
  const cluster = p.values['cluster'] === undefined ? DEMO_CLUSTER : clusterName(p);
  const count = intOption(p, 'migrations', 3, 1, 300);
  const say = (s: string) => { if (!json) process.stdout.write(s + '\n'); };
  const migrations: DemoMigration[] = [];
  let load: LoadClient | undefined;
  let failure: string | undefined;
  let finalClient: { errors: string[]; alive: number; requests: number } | undefined;
  try {
    await clusterDown(cluster);
    const rec = await clusterUp({ cluster, nodes: 3, onProgress: json ? undefined : (l) => say(`  ${l}`) });
    const nc = await connectBus(adminBus(rec), 'podmotion-demo');
    try {
      for (const r of (await registrations(nc)).values()) {
        say(`  ${r.node}: kernel ${r.capabilities.kernel}, CRIU ${r.capabilities.criuVersion ?? 'missing'}, pod CIDR ${r.podCidr}`);
      }
      const pod = await request(nc, Subjects.node('node-1', 'pod.run'), codecs.podRun, codecs.podInfo,
        { name: POD, port: PORT, command: [PYTHON, path.join(WORKLOADS, 'counter_server.py'), String(PORT)] }, { timeoutMs: 30_000 });
      say(`pod ${POD} on node-1: ${pod.ip}:${PORT} (a counter per connection)`);
      load = await startLoad(rec.plan.client.netns, pod.ip, PORT, CONNECTIONS);
      say(`client: ${CONNECTIONS} connections from ${rec.plan.client.netns}, a request every 5 ms each, every reply checked\n`);
      await load.mark();
      const hops = ['node-2', 'node-3', 'node-1'];
      for (let i = 0; i < count; i++) {
        {
          const to = hops[i % hops.length]!;
          const s: MigrationStatus = await runMigration(nc, { pod: POD, toNode: to, strategy: 'Cold' }, MIGRATION_TIMEOUT_MS,
            (st) => say(`migration ${st.spec.id}: ${POD} ${st.spec.sourceNode} → ${to}`),
            (st, phase) => { if (!json) printCondition(st, phase); });
          const client = await load.mark();
          const o = outcomeOf(s);
          const m: DemoMigration = {
            name: s.spec.id, pod: POD, from: s.spec.sourceNode, to, phase: s.phase, freezeMs: o.freezeMs ?? null,
            clientMaxStallMs: client.maxStallMs, connections: o.connections ?? 0, preserved: o.preserved ?? 0,
            seqDeltaMax: o.seqDeltaMax ?? null, rst: o.rst ?? null, clientErrors: client.errors.length,
          };
          migrations.push(m);
          say(`  → ${m.phase}: freeze window ${m.freezeMs ?? '-'} ms · client max stall ${m.clientMaxStallMs} ms · ` +
            `${m.preserved}/${m.connections} connections kept · seq_delta=${m.seqDeltaMax ?? '-'} · ${m.rst ?? '-'} RST · ${m.clientErrors} client errors\n`);
          if (s.phase !== 'Complete') throw new Error(`migration ${s.spec.id} ended ${s.phase}: ${s.error?.message ?? ''}`);
        }
      }
      const fin = await load.stop();
      finalClient = { errors: fin.errors, alive: fin.alive, requests: fin.requests };
      load = undefined;
      if (fin.errors.length > 0) throw new Error(`client errors: ${fin.errors.slice(0, 3).join('; ')}`);
    } finally {
      await nc.close();
    }
  } catch (e) {
    failure = (e as Error).message;
  } finally {
    load?.kill();
    await clusterDown(cluster);
  }
  const left = await clusterNamespaces(cluster);
  if (left.length > 0) failure ??= `namespaces left behind: ${left.join(', ')}`;
  const summary = { ...summarize(migrations), clientRequests: finalClient?.requests ?? null, ok: failure === undefined, ...(failure ? { failure } : {}) };
  const out = p.values['out'] as string | undefined;
  if (out) {
    await mkdir(path.dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify({ date: new Date().toISOString(), kernel: release(), migrations, summary }, null, 2) + '\n');
  }
  if (json) {
    printJson({ migrations, summary });
  } else {
    say('summary');
    printTable(['MIGRATION', 'FROM', 'TO', 'PHASE', 'FREEZE', 'CLIENT STALL', 'KEPT', 'SEQ_DELTA', 'RST', 'ERRORS'],
      migrations.map((m) => [m.name, m.from, m.to, m.phase, `${m.freezeMs ?? '-'} ms`, `${m.clientMaxStallMs} ms`, `${m.preserved}/${m.connections}`, m.seqDeltaMax ?? '-', m.rst ?? '-', m.clientErrors]));
    say(`\nfreeze window median ${summary.freezeMsMedian ?? '-'} ms, max ${summary.freezeMsMax ?? '-'} ms · client max stall median ${summary.clientMaxStallMsMedian ?? '-'} ms, max ${summary.clientMaxStallMsMax ?? '-'} ms`);
    say(`${summary.complete}/${summary.migrations} complete · ${summary.clientRequests ?? '-'} client requests, ${summary.clientErrors} errors, ${summary.rst} RST · cluster torn down`);
    say(failure ? `\ndemo FAILED: ${failure}` : '\ndemo complete');
  }
  return failure ? 1 : 0;
}

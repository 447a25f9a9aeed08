/**
 * Cancel mid-migration rolls back; a coordinator killed mid-migration and restarted rolls back from the
 * status it persisted. Both keep every connection.
 */
import test from 'ava';
import path from 'node:path';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { cli, cliJson, snapshot } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { adminBus, startCoordinatorProcess, waitForCoordinator } from '../../node-runtime/local-cluster.js';
import { connectBus } from '../../bus/connection.js';
import { stopRef } from '../../node-runtime/procs.js';
import { PORT, bringUp, imagesLeft, podNode, tearDown, type Bed } from './helpers.js';

const CLUSTER = 'itcr';
let bed: Bed | undefined;

test.before(async () => {
  // The admission test does several requests while the first migration is paused: room for a loaded machine.
  process.env['PODMOTION_TEST_PAUSE_MS'] = '10000'; // short of the 15 s phase timeouts
  bed = await bringUp(CLUSTER);
});
test.after.always(async () => {
  await tearDown(bed, CLUSTER);
});

async function activeMigration(): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const l = await cliJson(['list', '--active', '--cluster', CLUSTER]);
    if (l.migrations.length > 0) return l.migrations[0].id;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no active migration appeared');
}

test.serial('cancel during a migration rolls back and keeps every connection', async (t) => {
  const running = cli(['migrate', 'counter', '--to-node', 'node-2', '--strategy', 'Cold', '--pause-at', 'OverlayHandoff', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  const id = await activeMigration();
  await new Promise((r) => setTimeout(r, 1500));
  const c = await cli(['cancel', id, '--cluster', CLUSTER]);
  t.is(c.code, 0, c.stderr);
  t.is(c.stdout, 'cancelled — rollback initiated\n');
  const r = await running;
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Cancelled');
  t.is(s.rollbackReason, 'cancel');
  t.is(await podNode(CLUSTER), 'node-1');
  const client = await bed!.load.mark();
  t.deepEqual(client.errors, []);
  t.is(client.alive, 8);
  t.false((await snapshot(CLUSTER)).netns.includes(`pm-${CLUSTER}-node-2-pod-counter`));
  t.deepEqual(await imagesLeft(id), []);
  const again = await cli(['cancel', id, '--cluster', CLUSTER]);
  t.is(again.code, 1);
  t.regex(again.stderr, /already ended: Cancelled/);
});

test.serial('a coordinator killed mid-migration and restarted rolls back from persisted state', async (t) => {
  const running = cli(['migrate', 'counter', '--to-node', 'node-3', '--strategy', 'Cold', '--pause-at', 'FinalFreeze', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  const id = await activeMigration();
  const rec = (await readClusterRecord(CLUSTER))!;
  // Wait until FinalFreeze runs; its effect (a dump well under a second) then pauses 5 s in the test hook,
  // with the pod frozen and the images on the destination: kill the coordinator outright in that window.
  let phase = '';
  for (let i = 0; i < 200 && phase !== 'FinalFreeze'; i++) {
    phase = (await cliJson(['status', id, '--cluster', CLUSTER])).phase;
    if (phase !== 'FinalFreeze') await new Promise((r) => setTimeout(r, 20));
  }
  t.is(phase, 'FinalFreeze');
  await new Promise((r) => setTimeout(r, 1500));
  process.kill(rec.coordinator!.pid, 'SIGKILL');
  await stopRef(rec.coordinator!, 0);
  await startCoordinatorProcess(rec, adminBus(rec));
  const nc = await connectBus(adminBus(rec), 'itcr-test');
  await waitForCoordinator(nc, 15_000);
  await nc.close();
  const r = await running;
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
  t.is(s.rollbackReason, 'coordinator-restart');
  t.is(await podNode(CLUSTER), 'node-1');
  const client = await bed!.load.mark();
  t.deepEqual(client.errors, []);
  t.is(client.alive, 8);
  t.false((await snapshot(CLUSTER)).netns.includes(`pm-${CLUSTER}-node-3-pod-counter`));
  // And the pod can still move afterwards.
  const next = await cliJson(['migrate', 'counter', '--to-node', 'node-2', '--strategy', 'Cold', '--wait', '--cluster', CLUSTER], 180_000);
  t.is(next.phase, 'Complete');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('admission: a migration waits for a node busy with another, runs after it, and can be cancelled while it waits', async (t) => {
  // A coordinator that lets a node take part in one migration at a time.
  const rec = (await readClusterRecord(CLUSTER))!;
  process.env['PODMOTION_MAX_MIGRATIONS_PER_NODE'] = '1';
  try {
    await stopRef(rec.coordinator!, 5_000);
    await startCoordinatorProcess(rec, adminBus(rec));
  } finally {
    delete process.env['PODMOTION_MAX_MIGRATIONS_PER_NODE'];
  }
  const nc = await connectBus(adminBus(rec), 'itcr-test');
  await waitForCoordinator(nc, 15_000);
  await nc.close();
  const home = (await podNode(CLUSTER))!;
  const to = home === 'node-1' ? 'node-2' : 'node-1';
  const other = ['node-1', 'node-2', 'node-3'].find((n) => n !== home && n !== to)!;
  const second = await cliJson(['pod', 'run', 'second', '--node', home, '--port', String(PORT), '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'counter_server.py'), String(PORT)]);
  t.is(second.node, home);

  const first = cli(['migrate', 'counter', '--to-node', to, '--strategy', 'Cold', '--pause-at', 'OverlayHandoff', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  const firstId = await activeMigration();
  const queued = await cliJson(['migrate', 'second', '--to-node', other, '--strategy', 'Cold', '--json', '--cluster', CLUSTER]);
  t.is(queued.phase, 'Pending');
  const why = queued.conditions.find((x: { type: string }) => x.type === 'Pending');
  t.is(why.reason, 'Queued');
  t.regex(why.message, new RegExp(`node ${home} takes part in 1 migrations \\(limit 1 per node\\)`));
  const shown = await cli(['status', queued.spec.id, '--cluster', CLUSTER]);
  t.regex(shown.stdout, /Phase: Pending[\s\S]*Queued: waiting for a slot/);

  // Cancelled while waiting: nothing ran, nothing to roll back.
  const c = await cli(['cancel', queued.spec.id, '--cluster', CLUSTER]);
  t.is(c.code, 0, c.stderr);
  t.regex(c.stdout, /cancelled before it started/);
  t.is((await cliJson(['status', queued.spec.id, '--cluster', CLUSTER])).phase, 'Cancelled');

  // Asked again, it waits, then runs once the first one has ended.
  const again = cli(['migrate', 'second', '--to-node', other, '--strategy', 'Cold', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  const a = JSON.parse((await first).stdout);
  t.is(a.phase, 'Complete', JSON.stringify(a.error));
  t.is(a.spec.id, firstId);
  const r = await again;
  const b = JSON.parse(r.stdout);
  t.is(b.phase, 'Complete', JSON.stringify(b.error));
  const admitted = b.conditions.find((x: { type: string }) => x.type === 'Pending');
  t.is(admitted.status, 'True');
  t.is(admitted.reason, 'Admitted');
  const began = b.conditions.find((x: { type: string }) => x.type === 'SocketInventory').startedAtMs;
  t.true(began >= a.endedAtMs, `the second began (${began}) only after the first ended (${a.endedAtMs})`);
  t.is((await cliJson(['pod', 'list', '--cluster', CLUSTER])).pods.find((p: { name: string }) => p.name === 'second').node, other);
  const client = await bed!.load.mark();
  t.deepEqual(client.errors, []);
  t.is(client.alive, 8);
});

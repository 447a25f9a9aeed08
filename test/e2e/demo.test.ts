/** `podmotion demo --json`, the main job: three migrations under load, every connection kept, nothing left. */
import test from 'ava';
import { cli, snapshot } from '../integration/helpers.js';

test('the demo moves the pod node-1 → node-2 → node-3 → node-1 keeping all 8 connections', async (t) => {
  const before = await snapshot('itdemo');
  const r = await cli(['demo', '--cluster', 'itdemo', '--json'], 300_000);
  t.is(r.code, 0, r.stderr || r.stdout.slice(-500));
  const out = JSON.parse(r.stdout);
  t.deepEqual(out.migrations.map((m: { from: string; to: string }) => `${m.from}>${m.to}`), ['node-1>node-2', 'node-2>node-3', 'node-3>node-1']);
  for (const m of out.migrations) {
    t.is(m.phase, 'Complete');
    t.is(m.connections, 8);
    t.is(m.preserved, 8);
    t.is(m.seqDeltaMax, 0);
    t.is(m.rst, 0);
    t.is(m.clientErrors, 0);
    t.true(m.freezeMs > 0 && m.clientMaxStallMs > 0);
    for (const k of ['name', 'pod', 'from', 'to', 'phase', 'freezeMs', 'clientMaxStallMs', 'connections', 'preserved', 'seqDeltaMax', 'rst', 'clientErrors']) {
      t.true(k in m, `migration field ${k}`);
    }
  }
  t.true(out.summary.ok);
  t.is(out.summary.complete, 3);
  t.true(out.summary.connectionsKept);
  t.is(out.summary.clientErrors, 0);
  t.true(out.summary.clientRequests > 0);
  t.deepEqual(await snapshot('itdemo'), before, 'the demo cleans up after itself');
});

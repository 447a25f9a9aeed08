/**
 * PostgreSQL 15 under pgbench (8 clients) migrates twice with its data on a local volume: no failed
 * transaction, every connection kept (seq_delta 0, no RST), and the TPC-B invariant holds afterwards.
 */
import test from 'ava';
import { cli, cliJson } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { PG_POD_SCRIPT, PG_PORT, pgbench, pgbenchConsistent, pgbenchInit } from '../../cli/postgres.js';

const CLUSTER = 'itpg';

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
});
test.after.always(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

test('two migrations under pgbench: zero failed transactions, zero RST, data intact', async (t) => {
  const pod = await cliJson(['pod', 'run', 'db', '--node', 'node-1', '--port', String(PG_PORT), '--user', 'postgres', '--volume', 'data',
    '--cluster', CLUSTER, '--', PG_POD_SCRIPT, String(PG_PORT)]);
  t.is(pod.user, 'postgres');
  const netns = (await readClusterRecord(CLUSTER))!.plan.client.netns;
  await pgbenchInit(netns, pod.ip, 2);
  // Long enough to outlast both migrations (pre-copy under pgbench takes seconds): connections must be live at each freeze.
  const bench = pgbench(netns, pod.ip, { clients: 8, threads: 2, seconds: 45 });
  await new Promise((r) => setTimeout(r, 4000));
  for (const to of ['node-2', 'node-1']) {
    const r = await cli(['migrate', 'db', '--to-node', to, '--wait', '--json', '--cluster', CLUSTER], 240_000);
    const s = JSON.parse(r.stdout);
    t.is(s.phase, 'Complete', JSON.stringify(s.error));
    const tcp = s.results.TCPVerifying;
    t.is(tcp.connections, 8, `the 8 pgbench connections were live at the freeze: ${JSON.stringify({ tcp, inventory: s.results.SocketInventory?.connections })}`);
    t.is(tcp.preserved, 8);
    t.is(tcp.seqDeltaMax, 0);
    t.is(tcp.rst, 0);
    t.true(s.results.FinalFreeze.volumeBulkBytes > 0, 'the data directory was copied');
    // PostgreSQL runs as its own user (no CAP_SYS_PTRACE): its writes are still tracked, on the second move too
    // (the pod was restored by then). With ~35 MB of private memory beside its shared buffers, the freeze is a
    // plain dump whose pages go as references to what the rounds delivered.
    const rounds = s.results.PreCopyMemory.rounds as Array<{ tracked?: boolean }>;
    t.true(rounds.length > 0 && rounds.every((r) => r.tracked), `writes tracked: ${JSON.stringify(rounds)}`);
    const ff = s.results.FinalFreeze;
    t.is(ff.lazyFromRounds, undefined, 'a plain dump');
    t.true(ff.referencedPages > 0 && ff.wireBytes < ff.bytes / 4, `freeze sent ${ff.wireBytes} of a ${ff.bytes}-byte checkpoint`);
    await new Promise((r) => setTimeout(r, 3000));
  }
  const b = await bench;
  t.is(b.code, 0, b.output.slice(-500));
  t.is(b.failed, 0, 'no failed transaction');
  t.true(b.processed > 1000, `${b.processed} transactions`);
  const c = await pgbenchConsistent(netns, pod.ip);
  t.true(c.ok, `balances and history agree: ${c.totals}`);
});

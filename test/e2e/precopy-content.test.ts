/**
 * Pre-copy where writes cannot be tracked (an agent started with PODMOTION_WRITE_TRACKING=off, as on a kernel
 * without asynchronous userfaultfd write-protection): rounds and the freeze compare pages by content, and the
 * pod still moves with its memory intact over a connection that stays up.
 */
import test from 'ava';
import path from 'node:path';
import { cli, cliJson } from '../integration/helpers.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { imagesLeft, startMemoryChecker, type MemoryChecker } from './helpers.js';

const CLUSTER = 'itprc';
const PORT = 7099;
let checker: MemoryChecker | undefined;

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  process.env['PODMOTION_WRITE_TRACKING'] = 'off';
  try {
    await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
  } finally {
    delete process.env['PODMOTION_WRITE_TRACKING'];
  }
});
test.after.always(async () => {
  checker?.kill();
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
});

test('PreCopy by content moves a pod that keeps writing, with its memory intact', async (t) => {
  const pod = await cliJson(['pod', 'run', 'mem', '--node', 'node-1', '--port', String(PORT), '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'mem_writer.py'), String(PORT), '32', '10']);
  checker = await startMemoryChecker(CLUSTER, pod.ip, PORT);
  const ask = () => checker!.ask();
  t.regex(await ask(), /^ok 8192 \d+$/);
  const r = await cli(['migrate', 'mem', '--to-node', 'node-2', '--strategy', 'PreCopy', '--wait', '--json', '--cluster', CLUSTER], 240_000);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.is(s.phase, 'Complete', JSON.stringify(s.error));
  t.true(s.results.PreCopyMemory.rounds.every((x: { tracked?: boolean }) => x.tracked === undefined), 'no round was tracked');
  const ff = s.results.FinalFreeze;
  t.is(ff.lazyFromRounds, undefined, 'a full dump, not a lazy one');
  t.true(ff.referencedPages > 0, 'pages delivered by pre-copy travel by reference');
  t.true(ff.wireBytes < ff.bytes / 2, `freeze sent ${ff.wireBytes} of a ${ff.bytes}-byte checkpoint`);
  t.is(s.results.Restore.pagesFromCache, ff.referencedPages);
  t.regex(await ask(), /^ok 8192 \d+$/, 'every page intact after the move, over the same connection');
  t.deepEqual(await imagesLeft(s.spec.id), []);
});

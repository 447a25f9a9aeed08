/**
 * Volumes follow the pod: a pod keeping a journal on a `local` volume (appending a numbered line every 2 ms
 * to a file it holds open) moves with every strategy and its journal has no gap; the source's copy is gone
 * after cutover. A failure after the freeze rolls back to the source's copy, the destination's is removed.
 * A `shared` volume is re-attached as it is.
 */
import test from 'ava';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { cli, cliJson } from '../integration/helpers.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';
import { clusterVolumesDir, nodeVolumeDir, podVolumePath } from '../../node-runtime/constants.js';

const CLUSTER = 'itvol';
const PORT = 7200;

test.before(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  process.env['PODMOTION_TEST_HOOKS'] = '1';
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
});
test.after.always(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  delete process.env['PODMOTION_TEST_HOOKS'];
});

/** The journal's lines: 1..N in order, none missing. */
async function journal(pod: string, volume = 'data'): Promise<{ lines: number; gapless: boolean }> {
  const l = (await readFile(path.join(podVolumePath(CLUSTER, pod, volume), 'journal'), 'utf8')).split('\n').filter(Boolean).map(Number);
  return { lines: l.length, gapless: l.every((x, i) => x === i + 1) };
}

const exists = (p: string) => stat(p).then(() => true, () => false);

async function migrate(pod: string, to: string, strategy: string, extra: string[] = []) {
  const r = await cli(['migrate', pod, '--to-node', to, '--strategy', strategy, '--wait', '--json', '--cluster', CLUSTER, ...extra], 180_000);
  return JSON.parse(r.stdout);
}

test.serial('a local volume moves with the pod under every strategy; the journal has no gap', async (t) => {
  await cliJson(['pod', 'run', 'vw', '--node', 'node-1', '--port', String(PORT), '--volume', 'data', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'volume_writer.py'), String(PORT)]);
  await new Promise((r) => setTimeout(r, 500));
  let at = 'node-1';
  let before = (await journal('vw')).lines;
  for (const strategy of ['PreCopy', 'Cold', 'PostCopy']) {
    const to = at === 'node-1' ? 'node-2' : 'node-1';
    const s = await migrate('vw', to, strategy);
    t.is(s.phase, 'Complete', `${strategy}: ${JSON.stringify(s.error)}`);
    const ff = s.results.FinalFreeze;
    t.true(ff.volumeBulkFiles >= 2, `${strategy}: the bulk round copied the journal and the state file`);
    t.true(ff.volumeFiles >= 1, `${strategy}: the last round, in the freeze, copied what changed since`);
    await new Promise((r) => setTimeout(r, 300));
    const j = await journal('vw');
    t.true(j.gapless, `${strategy}: journal without a gap`);
    t.true(j.lines > before, `${strategy}: the pod kept writing after the move (${before} → ${j.lines})`);
    before = j.lines;
    t.false(await exists(nodeVolumeDir(CLUSTER, at, 'vw', 'data')), `${strategy}: the source's copy is gone`);
    t.false(await exists(nodeVolumeDir(CLUSTER, to, 'vw', 'data')), `${strategy}: the destination's copy is the one in place`);
    at = to;
  }
});

test.serial('a failure after the freeze rolls back to the source copy; the destination copy is removed', async (t) => {
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  const from = list.pods.find((p: { name: string }) => p.name === 'vw').node as string;
  const to = from === 'node-1' ? 'node-2' : 'node-1';
  const before = (await journal('vw')).lines;
  const s = await migrate('vw', to, 'PreCopy', ['--fail-at', 'OverlayHandoff']);
  t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
  await new Promise((r) => setTimeout(r, 300));
  const j = await journal('vw');
  t.true(j.gapless);
  t.true(j.lines > before, 'the source copy resumed and kept writing to its own volume');
  t.false(await exists(nodeVolumeDir(CLUSTER, to, 'vw', 'data')), 'nothing left on the destination');
  t.false(await exists(nodeVolumeDir(CLUSTER, from, 'vw', 'data')), 'the source copy is the one in place');
});

test.serial('moving the pod back after it served on the destination brings what it wrote there', async (t) => {
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  const from = list.pods.find((p: { name: string }) => p.name === 'vw').node as string;
  const to = from === 'node-1' ? 'node-2' : 'node-1';
  const before = (await journal('vw')).lines;
  // The copy serves on the destination for 5 s (writing ~2500 lines there), then verification fails.
  const s = await migrate('vw', to, 'Cold', ['--pause-at', 'DisengageHold', '--fail-at', 'TCPVerifying']);
  t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
  t.true(s.results.RollingBack?.reclaimed, 'the copy that served on the destination was moved back');
  t.true((await journal('vw')).lines > before + 1000, 'the journal kept what was written on the destination');
  await new Promise((r) => setTimeout(r, 300));
  const j = await journal('vw');
  t.true(j.gapless, 'lines written on the destination came back with the pod, none missing');
  const after = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.is(after.pods.find((p: { name: string }) => p.name === 'vw').node, from);
  t.false(await exists(nodeVolumeDir(CLUSTER, to, 'vw', 'data')), 'nothing left on the destination');
  await cli(['pod', 'delete', 'vw', '--cluster', CLUSTER]);
  t.deepEqual((await readdir(clusterVolumesDir(CLUSTER)).catch(() => [] as string[])).filter((d) => d !== '.disks'), [], 'pod delete removes its volumes');
  for (const n of ['node-1', 'node-2']) t.false(await exists(path.dirname(nodeVolumeDir(CLUSTER, n, 'vw', 'data'))));
});

test.serial('a shared volume is re-attached as it is', async (t) => {
  await cliJson(['pod', 'run', 'vs', '--node', 'node-1', '--port', String(PORT), '--volume', 'data:shared', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'volume_writer.py'), String(PORT)]);
  await new Promise((r) => setTimeout(r, 300));
  const s = await migrate('vs', 'node-2', 'Cold');
  t.is(s.phase, 'Complete', JSON.stringify(s.error));
  t.is(s.results.FinalFreeze.volumeFiles, undefined, 'nothing copied');
  await new Promise((r) => setTimeout(r, 300));
  t.true((await journal('vs')).gapless);
});

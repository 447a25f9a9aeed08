/**
 * A failure injected after the real work of each phase before Cutover (the coordinator's test hook) rolls
 * back: the pod serves on the source with its connections intact and nothing is left on the destination.
 */
import test from 'ava';
import { readdir } from 'node:fs/promises';
import { cli, snapshot } from '../integration/helpers.js';
import { BPF_PIN_ROOT } from '../../node-runtime/constants.js';
import { bringUp, imagesLeft, podNode, tearDown, type Bed } from './helpers.js';

const CLUSTER = 'itrb';
let bed: Bed | undefined;

test.before(async () => {
  bed = await bringUp(CLUSTER);
});
test.after.always(async () => {
  await tearDown(bed, CLUSTER);
});

const PHASES = ['SocketInventory', 'Validating', 'DestinationPrewarm', 'ZeroWindowArm', 'FinalFreeze', 'OverlayHandoff',
  'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying'];

for (const phase of PHASES) {
  test.serial(`a failure after ${phase} rolls back with every connection intact`, async (t) => {
    const from = (await podNode(CLUSTER))!;
    const to = from === 'node-2' ? 'node-3' : 'node-2';
    const r = await cli(['migrate', 'counter', '--to-node', to, '--strategy', 'Cold', '--fail-at', phase, '--wait', '--json', '--cluster', CLUSTER], 180_000);
    t.is(r.code, 1, r.stderr);
    const s = JSON.parse(r.stdout);
    t.is(s.phase, 'RolledBack', JSON.stringify(s.error));
    t.is(s.error.phase, phase);
    t.regex(s.error.message, /injected failure/);
    t.is(await podNode(CLUSTER), from, 'the pod serves where it was');
    const client = await bed!.load.mark();
    t.deepEqual(client.errors, [], 'no client error, no reconnect');
    t.is(client.alive, 8);
    const snap = await snapshot(CLUSTER);
    t.false(snap.netns.includes(`pm-${CLUSTER}-${to}-pod-counter`), 'nothing left on the destination');
    t.deepEqual(await imagesLeft(s.spec.id), []);
    const pins = (await readdir(BPF_PIN_ROOT).catch(() => [] as string[])).filter((p) => p.startsWith(`${CLUSTER}-`));
    t.deepEqual(pins, [`${CLUSTER}-${from}-counter`], 'only the pod\'s own hold (attached since it started) is left, none on the destination');
    const { holdStats } = await import('../../bpf/index.js');
    t.deepEqual((await holdStats(`${BPF_PIN_ROOT}/${CLUSTER}-${from}-counter`)).mode, [], 'and it holds nothing');
    // The pod still answers new connections too.
    const after = await bed!.load.mark();
    t.true(after.requests > 0 || client.requests > 0);
  });
}

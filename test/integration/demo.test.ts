/** `podmotion demo --json` on a fresh machine state: every step passes and nothing is left behind. */
import test from 'ava';
import { cli, snapshot } from './helpers.js';

test('the demo brings a cluster up, serves traffic across the overlay and tears down cleanly', async (t) => {
  const before = await snapshot('itdemo');
  const r = await cli(['demo', '--cluster', 'itdemo', '--json'], 180_000);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ok: boolean; steps: Array<{ step: string; ok: boolean; detail: string }> };
  t.true(out.ok);
  const byName = (prefix: string) => out.steps.find((s) => s.step.startsWith(prefix));
  t.regex(byName('node agents registered')!.detail, /node-3: kernel .*CRIU \d+\.\d+\.\d+ \(check passed\)/);
  t.regex(byName('client namespace')!.detail, /20 request\/replies in order: true/);
  t.regex(byName('pod on node-2')!.detail, /20 request\/replies in order: true/);
  t.true(byName('cluster down')!.ok);
  t.deepEqual(await snapshot('itdemo'), before);
});

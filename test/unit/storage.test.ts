/** Storage tiers: pods without volumes need nothing; a volume no tier accepts is refused with a reason. */
import test from 'ava';
import { planVolumes, type StorageTier } from '../../actors/storage/index.js';

test('a pod without volumes has an empty plan', (t) => {
  t.deepEqual(planVolumes('web', []), []);
});

test('a volume is refused when no tier of this build accepts it', (t) => {
  const err = t.throws(() => planVolumes('db', [{ name: 'data', hostPath: '/dev/sdb', tier: 'block' }]));
  t.is(err?.message, 'pod db: volume data (/dev/sdb) cannot move: no storage tier for it (tiers: shared, local)');
});

test('this build moves local and shared volumes', (t) => {
  t.deepEqual(planVolumes('db', [{ name: 'data', tier: 'local' }, { name: 'logs', tier: 'shared' }, { name: 'tmp' }]),
    [{ volume: 'data', tier: 'local' }, { volume: 'logs', tier: 'shared' }, { volume: 'tmp', tier: 'local' }]);
});

test('the first tier that accepts a volume is chosen, and refusals carry each tier\'s reason', (t) => {
  const tiers: StorageTier[] = [
    { name: 'shared', refuse: (v) => (v.hostPath?.startsWith('/shared/') ? undefined : 'not on a shared mount') },
    { name: 'local', refuse: (v) => (v.hostPath?.startsWith('/dev/') ? 'block devices are not copied' : undefined) },
  ];
  t.deepEqual(planVolumes('p', [{ name: 'a', hostPath: '/shared/a' }, { name: 'b', hostPath: '/var/b' }], tiers),
    [{ volume: 'a', tier: 'shared' }, { volume: 'b', tier: 'local' }]);
  t.regex(t.throws(() => planVolumes('p', [{ name: 'c', hostPath: '/dev/sdb' }], tiers))!.message,
    /volume c \(\/dev\/sdb\) cannot move: shared: not on a shared mount; local: block devices are not copied/);
});

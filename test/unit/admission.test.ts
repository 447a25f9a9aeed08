// Admission (actors/coordinator/admission.ts): per-node and per-cluster limits, order, no starvation.
import test from 'ava';
import { Admission } from '../../actors/coordinator/admission.js';
import type { MigrationSpec } from '../../machines/index.js';

let n = 0;
function spec(sourceNode: string, destinationNode: string, dryRun = false): MigrationSpec {
  n++;
  return { id: `m${n}`, pod: `p${n}`, sourceNode, destinationNode, strategy: 'Cold', networkContinuity: true, dryRun };
}

function harness(perNode: number, perCluster: number) {
  const a = new Admission({ perNode, perCluster });
  const started: string[] = [];
  const submit = (s: MigrationSpec) => ({ id: s.id, reason: a.submit(s, () => started.push(s.id)) });
  return { a, started, submit };
}

test('a node takes part in at most perNode migrations; a freed slot goes to the next in line', (t) => {
  const { a, started, submit } = harness(2, 10);
  const m1 = submit(spec('n1', 'n2'));
  const m2 = submit(spec('n1', 'n3'));
  const m3 = submit(spec('n4', 'n1'));
  t.is(m1.reason, undefined);
  t.is(m2.reason, undefined);
  t.regex(m3.reason ?? '', /node n1 takes part in 2 migrations \(limit 2 per node\)/);
  t.deepEqual(started, [m1.id, m2.id]);
  t.true(a.isWaiting(m3.id));
  a.release(m1.id);
  t.deepEqual(started, [m1.id, m2.id, m3.id]);
  t.is(a.usage().perNode.get('n1'), 2);
});

test('the cluster runs at most perCluster migrations', (t) => {
  const { a, started, submit } = harness(5, 2);
  submit(spec('a', 'b'));
  submit(spec('c', 'd'));
  const third = submit(spec('e', 'f'));
  t.regex(third.reason ?? '', /2 migrations run in the cluster \(limit 2\)/);
  t.is(started.length, 2);
  a.release(started[0]!);
  t.deepEqual(started.at(-1), third.id);
  t.is(a.usage().running, 2);
});

test('a busy node does not hold up migrations between other nodes', (t) => {
  const { started, submit } = harness(1, 10);
  submit(spec('n1', 'n2'));
  const blocked = submit(spec('n1', 'n3'));
  const other = submit(spec('n4', 'n5'));
  t.truthy(blocked.reason);
  t.is(other.reason, undefined);
  t.true(started.includes(other.id));
});

test('no overtaking on a node: a waiting migration keeps later ones off its nodes', (t) => {
  const { a, started, submit } = harness(1, 10);
  const first = submit(spec('n1', 'n2'));
  const waiting = submit(spec('n1', 'n3')); // waits for n1
  const later = submit(spec('n3', 'n4')); // n3 is free, but the earlier migration waits for it too
  t.regex(later.reason ?? '', /an earlier migration waits for node n3/);
  a.release(first.id);
  t.deepEqual(started, [first.id, waiting.id]);
  a.release(waiting.id);
  t.deepEqual(started, [first.id, waiting.id, later.id]);
});

test('a cancelled waiting migration no longer keeps later ones off its nodes', (t) => {
  const { a, started, submit } = harness(1, 10);
  submit(spec('n1', 'n2'));
  const waiting = submit(spec('n1', 'n3'));
  const later = submit(spec('n3', 'n4'));
  t.true(a.withdraw(waiting.id));
  t.false(started.includes(later.id), 'admitted only once the host has recorded the cancel');
  a.admitWaiting();
  t.true(started.includes(later.id));
});

test('dry runs take no slot; a withdrawn migration leaves the queue; restarts count running migrations', (t) => {
  const { a, started, submit } = harness(1, 1);
  const running = spec('n1', 'n2');
  a.occupy(running);
  const dry = submit(spec('n1', 'n2', true));
  t.is(dry.reason, undefined);
  t.deepEqual(started, [dry.id]);
  const w = submit(spec('n3', 'n4'));
  t.true(a.isWaiting(w.id));
  t.true(a.withdraw(w.id));
  t.false(a.withdraw(w.id));
  a.admitWaiting();
  a.release(running.id);
  t.deepEqual(started, [dry.id]);
  t.is(a.usage().running, 0);
  t.throws(() => new Admission({ perNode: 0, perCluster: 1 }), { instanceOf: RangeError });
});

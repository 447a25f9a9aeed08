// Pure logic of the Kubernetes side (k8s/api.ts, k8s/webhook.ts): status mapping, selectors, policies, review.
import test from 'ava';
import { choosePolicy, conditionReason, effectiveSpec, podMigrationStatus, selects, type MigrationPolicy } from '../../k8s/api.js';
import { reviewPodMigration, type ReviewDeps } from '../../k8s/webhook.js';
import type { MigrationStatusMsg } from '../../bus/api.js';

const status: MigrationStatusMsg = {
  spec: { id: 'db-1', pod: 'db', sourceNode: 'node-1', destinationNode: 'node-2', strategy: 'PreCopy', networkContinuity: true, dryRun: false },
  phase: 'Complete', cancelRequested: false, cutoverAttempts: 1, startedAtMs: 1_000, endedAtMs: 9_000, updatedAtMs: 9_000,
  conditions: [
    { type: 'SocketInventory', status: 'True', reason: 'Succeeded', message: 'SocketInventory succeeded', lastTransitionTimeMs: 1_100, startedAtMs: 1_000, durationMs: 100 },
    { type: 'FinalFreeze', status: 'True', reason: 'time-out!', message: '', lastTransitionTimeMs: 5_000, startedAtMs: 4_900 },
  ],
  results: { Restore: { freezeMs: 93.54 }, TCPVerifying: { connections: 8, preserved: 8, seqDeltaMax: 0, rst: 0 } },
};

test('a bus status becomes a PodMigration status with one condition per phase', (t) => {
  const s = podMigrationStatus(status, 3);
  t.is(s.phase, 'Complete');
  t.is(s.observedGeneration, 3);
  t.is(s.startTime, '1970-01-01T00:00:01.000Z');
  t.is(s.completionTime, '1970-01-01T00:00:09.000Z');
  t.is(s.freezeWindowMs, 93.5);
  t.deepEqual(s.connections, { total: 8, preserved: 8, seqDeltaMax: 0, rst: 0 });
  t.deepEqual(s.conditions![0], { type: 'SocketInventory', status: 'True', observedGeneration: 3, lastTransitionTime: '1970-01-01T00:00:01.100Z', reason: 'Succeeded', message: 'SocketInventory succeeded (100 ms)' });
  t.is(s.conditions![1]!.reason, 'TimeOut');
});

test('condition reasons are CamelCase words that start with a letter', (t) => {
  t.is(conditionReason('NOT_FOUND'), 'NOTFOUND');
  t.is(conditionReason('precondition failed'), 'PreconditionFailed');
  t.is(conditionReason('42'), 'Phase42');
  t.regex(conditionReason(''), /^[A-Za-z]/);
});

test('label selectors: matchLabels and every operator', (t) => {
  const l = { app: 'db', tier: 'gold' };
  t.true(selects(undefined, l));
  t.true(selects({ matchLabels: { app: 'db' } }, l));
  t.false(selects({ matchLabels: { app: 'web' } }, l));
  t.true(selects({ matchExpressions: [{ key: 'tier', operator: 'In', values: ['gold', 'silver'] }] }, l));
  t.false(selects({ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['gold'] }] }, l));
  t.true(selects({ matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, l));
  t.false(selects({ matchExpressions: [{ key: 'zone', operator: 'Exists' }] }, l));
});

const policy = (name: string, priority: number, spec: object, created = '2026-01-01T00:00:00Z'): MigrationPolicy =>
  ({ apiVersion: 'podmotion.io/v1alpha1', kind: 'MigrationPolicy', metadata: { name, creationTimestamp: created }, spec: { priority, ...spec } });

test('the highest-priority matching policy applies; the PodMigration\'s own fields win over it', (t) => {
  const ps = [policy('all', 0, { strategy: 'Cold' }), policy('gold', 5, { podSelector: { matchLabels: { tier: 'gold' } }, strategy: 'PostCopy', bandwidthMbps: 100, timeouts: { FinalFreeze: 9 } }),
    policy('other-ns', 9, { namespaceSelector: { matchLabels: { team: 'x' } } })];
  t.is(choosePolicy(ps, { team: 'y' }, { tier: 'gold' })?.metadata.name, 'gold');
  t.is(choosePolicy(ps, {}, {})?.metadata.name, 'all');
  t.is(choosePolicy(ps, { team: 'x' }, {})?.metadata.name, 'other-ns');
  const eff = effectiveSpec({ pod: 'db', bandwidthMbps: 7, timeouts: { Restore: 3 } }, ps[1]!.spec);
  t.deepEqual(eff, { pod: 'db', strategy: 'PostCopy', bandwidthMbps: 7, timeouts: { FinalFreeze: 9, Restore: 3 } });
  t.is(effectiveSpec({ pod: 'db', strategy: 'Cold' }, { strategy: 'PreCopy', allowPostCopy: true }).allowPostCopy, undefined, 'allowPostCopy only with PreCopy');
});

function deps(over: Partial<ReviewDeps> = {}): ReviewDeps {
  return {
    podNamespace: 'default',
    check: async () => ({ allowed: true, reasons: [], sourceNode: 'node-1', destinationNode: 'node-2', volumes: [] }),
    podMigrations: () => [],
    nodesMatching: () => ['node-1', 'node-3'],
    ...over,
  };
}
const create = (spec: object, ns = 'default') => ({ uid: 'u1', operation: 'CREATE' as const, namespace: ns, kind: { kind: 'PodMigration' },
  object: { apiVersion: 'podmotion.io/v1alpha1', kind: 'PodMigration', metadata: { name: 'm1', namespace: ns }, spec: spec as never } });

test('review: the coordinator\'s reasons are the answer, joined on one line', async (t) => {
  const r = await reviewPodMigration(create({ pod: 'db' }), deps({ check: async () => ({ allowed: false, reasons: ['pod db: volume x cannot move: local: not a local volume (tier nfs)', 'node node-9 not found'], volumes: [] }) }));
  t.deepEqual(r, { allowed: false, message: 'pod db: volume x cannot move: local: not a local volume (tier nfs); node node-9 not found' });
});

test('review: a busy pod, another namespace, an unreachable coordinator, a selector nothing matches', async (t) => {
  const busy = { apiVersion: 'v', kind: 'PodMigration', metadata: { name: 'old', namespace: 'default' }, spec: { pod: 'db' }, status: { phase: 'FinalFreeze' } };
  t.regex((await reviewPodMigration(create({ pod: 'db' }), deps({ podMigrations: () => [busy] })) as { message: string }).message, /already migrating \(PodMigration default\/old, phase FinalFreeze\)/);
  t.deepEqual(await reviewPodMigration(create({ pod: 'db' }), deps({ podMigrations: () => [{ ...busy, status: { phase: 'Complete' } }] })), { allowed: true });
  t.regex((await reviewPodMigration(create({ pod: 'db' }, 'prod'), deps()) as { message: string }).message, /not found in namespace prod/);
  t.regex((await reviewPodMigration(create({ pod: 'db' }), deps({ check: async () => { throw new Error('no reply within 8000 ms'); } })) as { message: string }).message,
    /cannot check pod db: PodMotion's coordinator did not answer \((?:Error: )?no reply within 8000 ms\)/);
  t.regex((await reviewPodMigration(create({ pod: 'db', destination: { nodeSelector: { z: 'a' } } }), deps({ nodesMatching: () => ['node-1'] })) as { message: string }).message,
    /no ready node other than node-1 matches/);
  t.deepEqual(await reviewPodMigration(create({ pod: 'db', destination: { nodeSelector: { z: 'a' } } }), deps()), { allowed: true });
  t.deepEqual(await reviewPodMigration({ ...create({ pod: 'db' }), operation: 'UPDATE' }, deps({ check: async () => { throw new Error('x'); } })), { allowed: true });
});

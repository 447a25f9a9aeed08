/**
 * `podmotion coordinator --cluster C [--max-migrations-per-node N] [--max-migrations-per-cluster N]`: the
 * coordinator process (started by `cluster up`, or as a Deployment).
 */
import { pino } from 'pino';
import { busFromEnv, connectBus } from '../bus/connection.js';
import { PreconditionError } from '../bus/errors.js';
import { systemClock } from '../common/clock.js';
import { startCoordinator } from '../actors/coordinator/index.js';
import { routeMember } from '../actors/node/relay.js';
import { requireCluster } from '../node-runtime/local-cluster.js';
import { clusterName, intOption, parse } from './args.js';
import { DEFAULT_ADMISSION_LIMITS } from '../actors/coordinator/admission.js';
import { UsageError } from './output.js';

export async function coordinatorCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { 'max-migrations-per-node': { type: 'string' }, 'max-migrations-per-cluster': { type: 'string' } });
  // Flags first, then the environment (a Deployment's env), then KubeVirt's defaults.
  for (const [flag, env] of [['max-migrations-per-node', 'PODMOTION_MAX_MIGRATIONS_PER_NODE'], ['max-migrations-per-cluster', 'PODMOTION_MAX_MIGRATIONS_PER_CLUSTER']] as const) {
    if (p.values[flag] === undefined && process.env[env] !== undefined) p.values[flag] = process.env[env];
  }
  const limits = {
    perNode: intOption(p, 'max-migrations-per-node', DEFAULT_ADMISSION_LIMITS.perNode, 1, 1000),
    perCluster: intOption(p, 'max-migrations-per-cluster', DEFAULT_ADMISSION_LIMITS.perCluster, 1, 100_000),
  };
  const cluster = p.values['cluster'] === undefined ? undefined : clusterName(p);
  if (!cluster) throw new UsageError('coordinator needs --cluster C');
  const rec = await requireCluster(cluster);
  const bus = busFromEnv();
  if (!bus) throw new PreconditionError('coordinator needs NATS_URL (and PODMOTION_NKEY) in its environment');
  const log = pino({ base: { component: 'coordinator', cluster } });
  log.info({ maxMigrationsPerNode: limits.perNode, maxMigrationsPerCluster: limits.perCluster }, 'admission limits');
  const nc = await connectBus(bus, 'podmotion-coordinator');
  const coordinator = await startCoordinator({
    nc, clock: systemClock, log, limits, testHooks: process.env['PODMOTION_TEST_HOOKS'] === '1',
    // The local cluster's client namespace is an overlay member without an agent: route it from here.
    routeExtraMembers: (podIp, vtepIp) => routeMember(rec.plan.client.netns, podIp, vtepIp),
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
    void nc.closed().then(() => resolve());
  });
  await coordinator.stop();
  await nc.drain().catch(() => {});
}

/** `podmotion agent --cluster C --node N`: the node agent process (started by `cluster up`, or by a DaemonSet). */
import { pino } from 'pino';
import { connectBus, busFromEnv } from '../bus/connection.js';
import { PreconditionError, NotFoundError } from '../bus/errors.js';
import { systemClock } from '../common/clock.js';
import { startAgent } from '../node-runtime/agent.js';
import { measureCapabilities } from '../node-runtime/capabilities.js';
import { requireCluster } from '../node-runtime/local-cluster.js';
import { registerMigrationActors } from '../actors/node/index.js';
import { bpfHold } from '../actors/node/bpf-hold.js';
import { holdPinDir } from '../node-runtime/constants.js';
import type { PodRecord } from '../node-runtime/records.js';
import { clusterName, parse } from './args.js';
import { UsageError } from './output.js';

export async function agentCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { node: { type: 'string' } });
  const nodeName = p.values['node'] as string | undefined;
  const cluster = p.values['cluster'] === undefined ? undefined : clusterName(p);
  if (!nodeName || !cluster) throw new UsageError('agent needs --cluster C --node N');
  const rec = await requireCluster(cluster);
  const node = rec.plan.nodes.find((n) => n.name === nodeName);
  if (!node) throw new NotFoundError(`node ${nodeName} is not in cluster ${cluster}`);
  const bus = busFromEnv();
  if (!bus) throw new PreconditionError('agent needs NATS_URL (and PODMOTION_NKEY) in its environment');
  const log = pino({ base: { component: 'agent', node: nodeName } });
  const capabilities = await measureCapabilities();
  const nc = await connectBus(bus, `podmotion-agent-${nodeName}`);
  // Every pod gets its traffic hold when it starts, mode none: attaching one changes the veth's tc setup,
  // which can cost an in-flight packet, so it must not happen on the eve of a freeze.
  const pin = (pod: string) => holdPinDir(cluster, nodeName, pod);
  const podHooks = {
    started: (rec: PodRecord) => bpfHold.attach({ nodeNetns: node.netns, dev: rec.hostIface, podIp: rec.ip, pin: pin(rec.name), modes: [] }),
    deleting: (rec: PodRecord) => bpfHold.detach({ nodeNetns: node.netns, dev: rec.hostIface, pin: pin(rec.name) }),
  };
  const agent = await startAgent({ cluster, node, nc, clock: systemClock, log, capabilities, podHooks });
  // Image streams between agents of the local cluster go over loopback: the agents share the host's network.
  const migration = registerMigrationActors({ cluster, node, nc, clock: systemClock, log, hold: bpfHold, dataHost: '127.0.0.1' });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    void nc.closed().then(() => resolve());
  });
  for (const s of migration) s.unsubscribe();
  await agent.stop();
  await nc.drain().catch(() => {});
}

/** `podmotion agent --cluster C --node N`: the node agent process (started by `cluster up`, or by a DaemonSet). */
import { pino } from 'pino';
import { connectBus, busFromEnv } from '../bus/connection.js';
import { PreconditionError, NotFoundError } from '../bus/errors.js';
import { systemClock } from '../common/clock.js';
import { startAgent } from '../node-runtime/agent.js';
import { measureCapabilities } from '../node-runtime/capabilities.js';
import { requireCluster } from '../node-runtime/local-cluster.js';
import { parse } from './args.js';
import { UsageError } from './output.js';

export async function agentCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { node: { type: 'string' } });
  const nodeName = p.values['node'] as string | undefined;
  const cluster = p.values['cluster'] as string | undefined;
  if (!nodeName || !cluster) throw new UsageError('agent needs --cluster C --node N');
  const rec = await requireCluster(cluster);
  const node = rec.plan.nodes.find((n) => n.name === nodeName);
  if (!node) throw new NotFoundError(`node ${nodeName} is not in cluster ${cluster}`);
  const bus = busFromEnv();
  if (!bus) throw new PreconditionError('agent needs NATS_URL (and PODMOTION_NKEY) in its environment');
  const log = pino({ base: { component: 'agent', node: nodeName } });
  const capabilities = await measureCapabilities();
  const nc = await connectBus(bus, `podmotion-agent-${nodeName}`);
  const agent = await startAgent({ cluster, node, nc, clock: systemClock, log, capabilities });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    void nc.closed().then(() => resolve());
  });
  await agent.stop();
  await nc.drain().catch(() => {});
}

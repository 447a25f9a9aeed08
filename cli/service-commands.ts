/**
 * `podmotion service create|list|delete`: Services of the local cluster (ClusterIP and NodePort), programmed
 * into every node the way kube-proxy's iptables mode does it. `list` shows, per node, the packets its
 * `ctstate INVALID` rule dropped: a migration that lost a flow's conntrack state shows there.
 */
import { NotFoundError } from '../bus/errors.js';
import { createService, deleteService, invalidDrops, listServices, type ServiceEndpoint } from '../node-runtime/services.js';
import { intOption, parse, requirePositional } from './args.js';
import { allPods, withCluster } from './context.js';
import { printJson, printTable, UsageError } from './output.js';

export async function serviceCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const p = parse(rest, { pod: { type: 'string', multiple: true }, port: { type: 'string' }, 'target-port': { type: 'string' }, 'node-port': { type: 'string' } });
  const json = p.values['json'] === true;
  await withCluster(p, async (ctx) => {
    const plan = ctx.cluster.plan;
    switch (verb) {
      case 'create': {
        const name = requirePositional(p, 0, 'service name (podmotion service create NAME --pod POD --port P)');
        const podNames = (p.values['pod'] as string[] | undefined) ?? [];
        if (podNames.length === 0) throw new UsageError('service create needs --pod POD (repeat it for more endpoints)');
        if (p.values['port'] === undefined) throw new UsageError('service create needs --port P (the ClusterIP port)');
        const port = intOption(p, 'port', 0, 1, 65535);
        const { pods } = await allPods(ctx);
        const endpoints: ServiceEndpoint[] = podNames.map((n) => {
          const pod = pods.find((x) => x.name === n);
          if (!pod) throw new NotFoundError(`pod ${n} not found in cluster ${plan.cluster} (see: podmotion pod list)`);
          return { pod: n, ip: pod.ip };
        });
        const dflt = pods.find((x) => x.name === podNames[0])?.port ?? port;
        const targetPort = intOption(p, 'target-port', dflt, 1, 65535);
        const nodePort = p.values['node-port'] === undefined ? undefined : intOption(p, 'node-port', 0, 1, 65535);
        const rec = await createService(plan, { name, port, targetPort, ...(nodePort !== undefined ? { nodePort } : {}), endpoints }, Date.now());
        if (json) return printJson(rec);
        process.stdout.write(`service ${rec.name}: ${rec.clusterIp}:${rec.port} -> ${rec.endpoints.map((e) => `${e.ip}:${rec.targetPort}`).join(', ')}` +
          `${rec.nodePort !== undefined ? `; node port ${rec.nodePort} on every node (${plan.nodes.map((n) => n.underlayIp).join(', ')})` : ''}\n`);
        return;
      }
      case 'list': {
        const services = await listServices(plan.cluster);
        const members = [plan.client, ...plan.nodes];
        const drops = Object.fromEntries(await Promise.all(members.map(async (m) => [m.name, await invalidDrops(m)] as const)));
        if (json) return printJson({ services, invalidDropped: drops });
        if (services.length === 0) process.stdout.write('no services\n');
        else printTable(['SERVICE', 'CLUSTER-IP', 'PORT', 'NODE-PORT', 'ENDPOINTS'],
          services.map((s) => [s.name, s.clusterIp, `${s.port}->${s.targetPort}`, s.nodePort ?? '-', s.endpoints.map((e) => `${e.pod} (${e.ip})`).join(', ')]));
        process.stdout.write(`packets dropped as ctstate INVALID: ${members.map((m) => `${m.name} ${drops[m.name]}`).join(', ')}\n`);
        return;
      }
      case 'delete': {
        const name = requirePositional(p, 0, 'service name');
        const rec = await deleteService(plan, name);
        if (json) return printJson(rec);
        process.stdout.write(`service ${name} deleted\n`);
        return;
      }
      default:
        throw new UsageError(`unknown service command "${verb ?? ''}" (use: create, list, delete)`);
    }
  });
}

/** `podmotion pod run|list|logs|delete`: every operation goes through the owning node's agent. */
import { Subjects } from '../bus/subjects.js';
import { request } from '../bus/rpc.js';
import { codecs } from '../node-runtime/agent.js';
import { POD_READY_TIMEOUT_MS, validatePodSpec } from '../node-runtime/pods.js';
import { parseVolume } from '../node-runtime/volumes.js';
import { intOption, parse, requirePositional } from './args.js';
import { allPods, nodeOfPod, requireNode, withCluster } from './context.js';
import { printJson, printTable, UsageError } from './output.js';

/** Pod start = namespace setup + process start + readiness wait; allow the readiness bound plus slack. */
const POD_RUN_TIMEOUT_MS = POD_READY_TIMEOUT_MS + 10_000;

export async function podCommand(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  const p = parse(rest, { node: { type: 'string' }, port: { type: 'string' }, lines: { type: 'string' }, user: { type: 'string' }, volume: { type: 'string', multiple: true },
    container: { type: 'string', multiple: true } });
  const json = p.values['json'] === true;
  await withCluster(p, async (ctx) => {
    switch (verb) {
      case 'run': {
        const name = requirePositional(p, 0, 'pod name (podmotion pod run NAME --node NODE -- CMD...)');
        const node = p.values['node'] as string | undefined;
        if (!node) throw new UsageError('pod run needs --node NODE');
        // --container NAME=COMMAND LINE (run by /bin/sh -c), repeated: one container each.
        const containers = ((p.values['container'] as string[] | undefined) ?? []).map((c) => {
          const eq = c.indexOf('=');
          if (eq <= 0 || eq === c.length - 1) throw new UsageError(`--container takes NAME=COMMAND (got ${JSON.stringify(c)})`);
          return { name: c.slice(0, eq), command: ['/bin/sh', '-c', c.slice(eq + 1)] };
        });
        if (p.rest.length === 0 && containers.length === 0) throw new UsageError('pod run needs a command after -- (podmotion pod run NAME --node NODE -- CMD...), or --container NAME=CMD');
        const port = p.values['port'] === undefined ? undefined : intOption(p, 'port', 0, 1, 65535);
        const user = p.values['user'] as string | undefined;
        const volumes = ((p.values['volume'] as string[] | undefined) ?? []).map(parseVolume);
        const spec = { name, command: p.rest, ...(containers.length ? { containers } : {}), ...(port !== undefined ? { port } : {}), ...(user !== undefined ? { user } : {}), ...(volumes.length ? { volumes } : {}) };
        validatePodSpec(spec);
        requireNode(ctx, node);
        const info = await request(ctx.nc, Subjects.node(node, 'pod.run'), codecs.podRun, codecs.podInfo, spec, { timeoutMs: POD_RUN_TIMEOUT_MS });
        if (json) return printJson(info);
        process.stdout.write(`pod ${info.name} running on ${info.node}: ip ${info.ip}, mac ${info.mac}, pid ${info.initPid}${info.user ? `, user ${info.user}` : ''}\n`);
        for (const c of info.containers ?? []) process.stdout.write(`  container ${c.name}: ${c.command.at(-1)}\n`);
        for (const v of info.volumes ?? []) process.stdout.write(`  volume ${v.name} (${v.tier}) at ${v.path}\n`);
        return;
      }
      case 'list': {
        const { pods, unreachable } = await allPods(ctx);
        if (json) return printJson({ pods, unreachable });
        if (pods.length === 0) process.stdout.write('no pods\n');
        else printTable(['POD', 'NODE', 'IP', 'MAC', 'PORT', 'PID', 'STATUS'], pods.map((x) => [x.name, x.node, x.ip, x.mac, x.port, x.initPid, x.running ? 'Running' : 'Exited']));
        if (unreachable.length > 0) process.stderr.write(`podmotion: not answering: ${unreachable.join(', ')}\n`);
        return;
      }
      case 'logs': {
        const name = requirePositional(p, 0, 'pod name');
        const node = await nodeOfPod(ctx, name);
        const lines = intOption(p, 'lines', 200, 1, 2000);
        const logs = await request(ctx.nc, Subjects.node(node, 'pod.logs'), codecs.podLogsReq, codecs.podLogs, { name, lines });
        if (json) return printJson(logs);
        for (const l of logs.lines) process.stdout.write(l + '\n');
        return;
      }
      case 'delete': {
        const name = requirePositional(p, 0, 'pod name');
        const node = await nodeOfPod(ctx, name);
        const info = await request(ctx.nc, Subjects.node(node, 'pod.delete'), codecs.podRef, codecs.podInfo, { name }, { timeoutMs: 15_000 });
        if (json) return printJson(info);
        process.stdout.write(`pod ${name} deleted from ${node}\n`);
        return;
      }
      default:
        throw new UsageError(`unknown pod command "${verb ?? ''}" (use: run, list, logs, delete)`);
    }
  });
}

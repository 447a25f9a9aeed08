/** The podmotion command line: a thin layer over the bus API and the local cluster. */
import { clusterCommand, nodeCommand } from './cluster-commands.js';
import { podCommand } from './pod-commands.js';
import { serviceCommand } from './service-commands.js';
import { agentCommand } from './agent-command.js';
import { doctorCommand } from './doctor-command.js';
import { coordinatorCommand } from './coordinator-command.js';
import { migrationCommand } from './migrate-commands.js';
import { demoCommand } from './demo-command.js';
import { operatorCommand } from './operator-command.js';
import { kubeToolCommand } from './kube-secret-command.js';
import { inspectCommand } from './inspect-command.js';
import { exitCodeFor, printError, UsageError } from './output.js';

export const USAGE = `usage: podmotion <command> [flags]

  doctor                                   what this machine has and lacks
  cluster up [--nodes N]                   create a local cluster (default 3 nodes)
  cluster status                           nodes, bus and pods
  cluster down [--all [--prefix P]]        remove everything the cluster made (--all: every cluster)
  node list | node ping NODE [--count N]   node agents on the bus
  pod run NAME --node NODE [--port P] [--user U] [--volume NAME[:local|shared]]... -- CMD...
          (or --container NAME=CMD ... instead of -- CMD: containers sharing the pod's network)
  pod list | pod logs NAME [--lines N] | pod delete NAME
  service create NAME --pod POD [--pod POD]... --port P [--target-port T] [--node-port N]
          a Service as kube-proxy makes it (ClusterIP, NodePort on every node)
  service list | service delete NAME       services, and packets each node dropped as ctstate INVALID
  migrate POD [--to-node N] [--strategy Cold] [--dry-run] [--wait] [--timeout S]
          [--no-network-continuity]        live-migrate a pod, streaming its phases
  status NAME | describe NAME | cancel NAME | list [--active]
  estimate POD [--to-node N] [--strategy S] migratable?, memory, dirty rate, predicted freeze (read-only)
  demo                                     the end-to-end demo on a fresh local cluster
  inspect [--port P] [--allow-cancel]      serve the statechart inspector (a live view of every migration)
  operator [--kubeconfig F] [--tls-dir D]  the Kubernetes CR bridge and admission webhook
  kube bus-secret [--namespace NS]         a Secret with the bus identities for the Helm chart

flags for every command: --json, --cluster NAME (default: local, or PODMOTION_CLUSTER),
  --nats URL and --nkey SEEDFILE (default: the cluster's embedded bus; or NATS_URL, PODMOTION_NKEY)
`;

/** Runs one command line; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const json = argv.includes('--json');
  try {
    switch (cmd) {
      case 'doctor': return await doctorCommand(rest);
      case 'cluster': await clusterCommand(rest); return 0;
      case 'node': await nodeCommand(rest); return 0;
      case 'pod': await podCommand(rest); return 0;
      case 'service': await serviceCommand(rest); return 0;
      case 'agent': await agentCommand(rest); return 0;
      case 'coordinator': await coordinatorCommand(rest); return 0;
      case 'operator': await operatorCommand(rest); return 0;
      case 'kube': await kubeToolCommand(rest); return 0;
      case 'inspect': await inspectCommand(rest); return 0;
      case 'demo': return await demoCommand(rest);
      case 'migrate': case 'status': case 'describe': case 'cancel': case 'list': case 'estimate':
        return await migrationCommand(cmd, rest);
      case undefined: case 'help': case '--help': case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}" (see: podmotion help)`);
    }
  } catch (e) {
    printError(e, json);
    return exitCodeFor(e);
  }
}

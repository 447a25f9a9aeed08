/** Shared by e2e tests: a local cluster with a counter pod under load from the client namespace. */
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readdir } from 'node:fs/promises';
import { cli, cliJson } from '../integration/helpers.js';
import { readClusterRecord } from '../../node-runtime/records.js';
import { PYTHON, WORKLOADS, startLoad, type LoadClient } from '../../cli/load.js';
import { IMAGES_ROOT } from '../../node-runtime/constants.js';

export const PORT = 7000;

export interface Bed {
  cluster: string;
  ip: string;
  load: LoadClient;
}

/** Cluster up (coordinator with test hooks), a counter pod on node-1, `connections` clients under load. */
export async function bringUp(cluster: string, connections = 8): Promise<Bed> {
  await cli(['cluster', 'down', '--cluster', cluster]);
  process.env['PODMOTION_TEST_HOOKS'] = '1';
  await cliJson(['cluster', 'up', '--nodes', '3', '--cluster', cluster]);
  const pod = await cliJson(['pod', 'run', 'counter', '--node', 'node-1', '--port', String(PORT), '--cluster', cluster, '--',
    PYTHON, path.join(WORKLOADS, 'counter_server.py'), String(PORT)]);
  const rec = (await readClusterRecord(cluster))!;
  const load = await startLoad(rec.plan.client.netns, pod.ip, PORT, connections);
  await load.mark();
  return { cluster, ip: pod.ip, load };
}

export async function tearDown(bed: Bed | undefined, cluster: string): Promise<void> {
  bed?.load.kill();
  await cli(['cluster', 'down', '--cluster', cluster]);
}

/** Where the pod runs now, per the agents. */
export async function podNode(cluster: string): Promise<string | undefined> {
  const list = await cliJson(['pod', 'list', '--cluster', cluster]);
  return list.pods.find((p: { name: string }) => p.name === 'counter')?.node;
}

/** Migration image directories left on this machine for a migration id. */
export async function imagesLeft(id: string): Promise<string[]> {
  return (await readdir(IMAGES_ROOT).catch(() => [] as string[])).filter((d) => d.includes(id));
}

/** One connection from the client namespace to a mem_writer.py pod; `ask` sends "check" over it and returns the answer. */
export interface MemoryChecker {
  ask(): Promise<string>;
  kill(): void;
}

/** Opens it once for a whole test: every check goes over the same connection, so it must survive every move. */
export async function startMemoryChecker(cluster: string, ip: string, port: number): Promise<MemoryChecker> {
  const client = (await readClusterRecord(cluster))!.plan.client.netns;
  const script = `import socket,sys\ns=socket.create_connection(("${ip}",${port}),timeout=60)\nf=s.makefile("rb")\nfor line in sys.stdin:\n  s.sendall(b"check\\n"); print(f.readline().decode().strip(), flush=True)\n`;
  const child = spawn('nsenter', [`--net=/run/netns/${client}`, '--', PYTHON, '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    async ask() {
      child.stdin.write('check\n');
      const r = await lines.next();
      return r.done ? 'connection lost' : r.value;
    },
    kill: () => child.kill('SIGKILL'),
  };
}

/** Shared by e2e tests: a local cluster with a counter pod under load from the client namespace. */
import path from 'node:path';
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

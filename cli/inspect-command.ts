/**
 * `podmotion inspect [--port 8080] [--host 127.0.0.1] [--allow-cancel]`: serves the statechart inspector for
 * a cluster and prints its URL. Read-only unless --allow-cancel: then a fresh token is written to a root-only
 * file (its path is printed, never the token) and the page's cancel needs it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { busFromEnv, connectBus } from '../bus/connection.js';
import { startInspector } from '../inspector/server.js';
import { clusterDir } from '../node-runtime/constants.js';
import { inspectorBus, requireCluster } from '../node-runtime/local-cluster.js';
import { clusterName, intOption, parse } from './args.js';
import { printJson } from './output.js';

export async function inspectCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { port: { type: 'string' }, host: { type: 'string' }, 'allow-cancel': { type: 'boolean' } });
  const cluster = clusterName(p);
  const port = intOption(p, 'port', 8080, 0, 65535);
  const host = (p.values['host'] as string | undefined) ?? '127.0.0.1';
  const rec = await requireCluster(cluster);
  const nc = await connectBus(busFromEnv() ?? inspectorBus(rec), 'podmotion-inspector');
  const log = pino({ base: { component: 'inspector', cluster } }, pino.destination(2));
  let tokenFile: string | undefined;
  let cancelToken: string | undefined;
  if (p.values['allow-cancel']) {
    cancelToken = randomBytes(24).toString('base64url');
    tokenFile = path.join(clusterDir(cluster), 'inspector.token');
    await mkdir(path.dirname(tokenFile), { recursive: true, mode: 0o700 });
    await writeFile(tokenFile, `${cancelToken}\n`, { mode: 0o600 });
  }
  const inspector = await startInspector({ nc, log, port, host, cluster, ...(cancelToken ? { cancelToken } : {}) });
  const url = inspector.url.replace('0.0.0.0', '127.0.0.1');
  if (p.values['json']) printJson({ url, cancel: cancelToken !== undefined, ...(tokenFile ? { tokenFile } : {}) });
  else {
    process.stdout.write(`PodMotion inspector for cluster ${cluster}: ${url}\n`);
    process.stdout.write(tokenFile ? `cancel enabled: its token is in ${tokenFile}\n` : 'read-only (--allow-cancel enables cancelling, with a token)\n');
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
    void nc.closed().then(() => resolve());
  });
  await inspector.close();
  if (tokenFile) await rm(tokenFile, { force: true });
  await nc.drain().catch(() => {});
}

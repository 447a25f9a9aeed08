/**
 * The embedded default bus: a nats-server with JetStream started by PodMotion itself, listening on
 * loopback only, its store in a temp dir, every client authenticated by NKey.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PreconditionError } from './errors.js';
import type { Identity, Permissions } from './identity.js';

/** nats-server answers within a second on this class of machine; ten covers a loaded CI box. */
export const NATS_START_TIMEOUT_MS = 10_000;

export interface EmbeddedServer {
  url: string;
  pid: number;
  storeDir: string;
  logFile: string;
}

function quote(s: string): string {
  return JSON.stringify(s);
}

function permissionsBlock(p: Permissions): string {
  const list = (xs: string[]) => `[${xs.map(quote).join(', ')}]`;
  const responses = p.allowResponses ? ', allow_responses: true' : '';
  return `permissions: { publish: { allow: ${list(p.publish)} }, subscribe: { allow: ${list(p.subscribe)} }${responses} }`;
}

/** The `authorization` block of a server config: one NKey user per identity, with its permissions. */
export function authorizationBlock(identities: readonly Identity[]): string {
  const users = identities
    .map((i) => `    { nkey: ${quote(i.publicKey)}${i.permissions ? ', ' + permissionsBlock(i.permissions) : ''} }`)
    .join(',\n');
  return ['authorization {', '  users: [', users, '  ]', '}', ''].join('\n');
}

/** The server config: loopback, random port, JetStream with bounded storage, NKey users only. */
export function serverConfig(storeDir: string, identities: readonly Identity[]): string {
  return [
    'host: "127.0.0.1"',
    'port: -1',
    'http: 0',
    `ports_file_dir: ${quote(storeDir)}`,
    'max_payload: 8MB',
    `jetstream { store_dir: ${quote(path.join(storeDir, 'js'))}, max_memory_store: 268435456, max_file_store: 2147483648 }`,
    authorizationBlock(identities),
  ].join('\n');
}

/**
 * Starts nats-server. With `detached` it outlives this process (a cluster's bus lives until
 * `cluster down`); otherwise the caller stops it with `stopEmbedded`.
 */
export async function startEmbedded(identities: readonly Identity[], opts: { detached: boolean; natsBin?: string }): Promise<EmbeddedServer> {
  const storeDir = await mkdtemp(path.join(tmpdir(), 'podmotion-nats-'));
  const confFile = path.join(storeDir, 'nats.conf');
  const logFile = path.join(storeDir, 'nats.log');
  await writeFile(confFile, serverConfig(storeDir, identities), { mode: 0o600 });
  const log = await open(logFile, 'a', 0o600);
  const bin = opts.natsBin ?? 'nats-server';
  const child = spawn(bin, ['-c', confFile, '-l', logFile], { detached: opts.detached, stdio: ['ignore', log.fd, log.fd] });
  await log.close();
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (e) => reject(new PreconditionError(`cannot start ${bin}: ${e.message} (run: make deps)`))),
  );
  if (opts.detached) child.unref();
  try {
    const url = await Promise.race([waitForPortsFile(storeDir, logFile), spawnError]);
    if (child.pid === undefined) throw new PreconditionError(`cannot start ${bin}`);
    return { url, pid: child.pid, storeDir, logFile };
  } catch (e) {
    // Nothing has recorded this server yet: stop it and remove its store here, or nobody will.
    child.kill('SIGKILL');
    await removeStore(storeDir);
    throw e;
  }
}

async function waitForPortsFile(storeDir: string, logFile: string): Promise<string> {
  const deadline = Date.now() + NATS_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const files = (await readdir(storeDir)).filter((f) => f.endsWith('.ports'));
    if (files.length > 0) {
      try {
        const ports = JSON.parse(await readFile(path.join(storeDir, files[0]!), 'utf8')) as { nats?: string[] };
        const url = ports.nats?.[0];
        if (url) return url;
      } catch {
        // written but not complete yet
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
  throw new PreconditionError(`nats-server did not start within ${NATS_START_TIMEOUT_MS} ms: ${tail}`);
}

/** Removes the server's temp dir (call after the process has exited). */
export async function removeStore(storeDir: string): Promise<void> {
  if (!path.basename(storeDir).startsWith('podmotion-nats-')) return;
  await rm(storeDir, { recursive: true, force: true });
}

/** Stops a server started with `startEmbedded` and removes its store: TERM, then KILL after a grace period. */
export async function stopEmbedded(srv: EmbeddedServer, graceMs = 5_000): Promise<void> {
  const alive = () => {
    try {
      process.kill(srv.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (alive()) {
    process.kill(srv.pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (alive()) process.kill(srv.pid, 'SIGKILL');
  }
  await removeStore(srv.storeDir);
}

/** Drives workloads/load_client.py inside a namespace: N connections of continuous request/reply traffic. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { NodeOperationError } from '../bus/errors.js';
import { PROJECT_ROOT } from '../node-runtime/constants.js';

export const WORKLOADS = path.join(PROJECT_ROOT, 'workloads');
/** Debian's interpreter: a pod command must not depend on a user's shell setup. */
export const PYTHON = '/usr/bin/python3';
/** The client answers a mark at once; longer means it is wedged. */
const MARK_TIMEOUT_MS = 10_000;

export interface LoadReport {
  connections: number;
  alive: number;
  requests: number;
  errors: string[];
  maxStallMs: number;
  perConnection: Array<{ local: string; requests: number; maxStallMs: number }>;
  final: boolean;
}

export interface LoadClient {
  /** Statistics since the previous mark; the max stall resets. */
  mark(): Promise<LoadReport>;
  stop(): Promise<LoadReport>;
  kill(): void;
}

/** Starts the load client in `netns` against ip:port and waits until every connection is open. */
export async function startLoad(netns: string, ip: string, port: number, connections: number, intervalMs = 5): Promise<LoadClient> {
  const child: ChildProcessWithoutNullStreams = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', PYTHON,
    path.join(WORKLOADS, 'load_client.py'), ip, String(port), String(connections), String(intervalMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  let stderr = '';
  let failed: Error | undefined;
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  // A client that died must surface as a rejected mark(), never as an uncaught EPIPE.
  child.on('error', (e) => (failed ??= e));
  child.stdin.on('error', (e) => (failed ??= e));
  const next = async (): Promise<Record<string, unknown>> => {
    if (failed) throw new NodeOperationError(`load client failed: ${failed.message}`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new NodeOperationError(`load client did not answer: ${stderr.trim()}`)), MARK_TIMEOUT_MS);
    });
    try {
      const r = await Promise.race([lines.next(), timeout]);
      if (r.done) throw new NodeOperationError(`load client exited: ${stderr.trim().split('\n').slice(-2).join(' | ')}`);
      return JSON.parse(r.value) as Record<string, unknown>;
    } finally {
      clearTimeout(timer);
    }
  };
  const ready = await next();
  const opened = (ready['connections'] as Array<string | null>).filter(Boolean).length;
  if (opened !== connections) {
    child.kill('SIGKILL');
    throw new NodeOperationError(`load client opened ${opened}/${connections} connections to ${ip}:${port}`);
  }
  return {
    async mark() {
      child.stdin.write('mark\n');
      return (await next()) as unknown as LoadReport;
    },
    async stop() {
      child.stdin.write('stop\n');
      const r = (await next()) as unknown as LoadReport;
      child.stdin.end();
      return r;
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}

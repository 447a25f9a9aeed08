/**
 * A real kube-apiserver with its own etcd for tests, started the way controller-runtime's envtest does:
 * a throwaway CA, a serving certificate for 127.0.0.1, a system:masters client certificate for the admin
 * kubeconfig, a service-account key pair, RBAC authorization. Binaries come from scripts/kube-tools.sh
 * (built once into .cache/kube/bin). Everything lives under one temp directory, removed by stop();
 * leftovers of an interrupted run (processes and directories under the same prefix) are removed first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../node-runtime/exec.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const DIR_PREFIX = 'podmotion-kube-';

export interface ApiServer {
  dir: string;
  url: string;
  kubeconfig: string;
  bin: string;
  /** The test CA (PEM), also trusted by the API server for client certificates. */
  caFile: string;
  /** Runs kubectl against it; resolves with exit code and output (never throws on a non-zero exit). */
  kubectl(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Stops the API server only (etcd keeps the data): start it again with restart(). */
  stopApiServer(): Promise<void>;
  restart(): Promise<void>;
  /** A serving certificate signed by the test CA for `ip`, written as tls.crt/tls.key into a new directory. */
  issueServing(ip: string): Promise<string>;
  stop(): Promise<void>;
}

export async function kubeBin(): Promise<string> {
  const r = await run('bash', [path.join(ROOT, 'scripts/kube-tools.sh')], { timeoutMs: 40 * 60_000 });
  return r.stdout.trim().split('\n').at(-1)!;
}

/** A TCP port free on loopback now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Kills processes and removes directories an earlier, interrupted run left behind. */
export async function sweepLeftovers(): Promise<void> {
  await run('pkill', ['-f', `/${DIR_PREFIX}`], { timeoutMs: 10_000 }).catch(() => {});
  for (const d of await readdir(tmpdir()).catch(() => [] as string[])) {
    if (d.startsWith(DIR_PREFIX)) await rm(path.join(tmpdir(), d), { recursive: true, force: true });
  }
}

const openssl = (args: string[], cwd: string) => run('openssl', args, { cwd, timeoutMs: 60_000 });

async function waitHealthy(url: string, caFile: string, dir: string, proc: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`kube-apiserver exited (${proc.exitCode}): ${(await readFile(logFile, 'utf8').catch(() => '')).slice(-2000)}`);
    const r = await run('curl', ['-sf', '--cacert', caFile, '--cert', path.join(dir, 'admin.crt'), '--key', path.join(dir, 'admin.key'), `${url}/readyz`], { timeoutMs: 5000 }).catch(() => undefined);
    if (r?.stdout.trim() === 'ok') return;
    await new Promise((res) => setTimeout(res, 300));
  }
  throw new Error(`kube-apiserver did not become ready: ${(await readFile(logFile, 'utf8').catch(() => '')).slice(-2000)}`);
}

export async function startApiServer(): Promise<ApiServer> {
  const bin = await kubeBin();
  const dir = await mkdtemp(path.join(tmpdir(), DIR_PREFIX));
  // The CA, the serving certificate (127.0.0.1), the admin client (system:masters) and the service-account keys.
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=podmotion-test-ca'], dir);
  const sign = async (name: string, subj: string, ext?: string) => {
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj], dir);
    if (ext) await writeFile(path.join(dir, `${name}.ext`), ext);
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2',
      ...(ext ? ['-extfile', `${name}.ext`] : [])], dir);
  };
  await sign('serving', '/CN=kube-apiserver', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await sign('admin', '/O=system:masters/CN=podmotion-test-admin', 'extendedKeyUsage=clientAuth\n');
  await openssl(['genrsa', '-out', 'sa.key', '2048'], dir);
  await openssl(['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir);

  const [etcdClient, etcdPeer, securePort] = await Promise.all([freePort(), freePort(), freePort()]);
  const etcd = spawn(path.join(bin, 'etcd'), [
    '--data-dir', path.join(dir, 'etcd'), '--name', 'podmotion-test',
    '--listen-client-urls', `http://127.0.0.1:${etcdClient}`, '--advertise-client-urls', `http://127.0.0.1:${etcdClient}`,
    '--listen-peer-urls', `http://127.0.0.1:${etcdPeer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeer}`,
    '--initial-cluster', `podmotion-test=http://127.0.0.1:${etcdPeer}`, '--unsafe-no-fsync', '--log-level', 'warn',
  ], { stdio: ['ignore', 'ignore', 'ignore'], detached: false });

  const url = `https://127.0.0.1:${securePort}`;
  const apiLog = path.join(dir, 'kube-apiserver.log');
  const apiArgs = [
    '--etcd-servers', `http://127.0.0.1:${etcdClient}`, '--cert-dir', path.join(dir, 'certs'),
    '--secure-port', String(securePort), '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1',
    '--tls-cert-file', path.join(dir, 'serving.crt'), '--tls-private-key-file', path.join(dir, 'serving.key'),
    '--client-ca-file', path.join(dir, 'ca.crt'), '--authorization-mode', 'RBAC',
    '--service-account-issuer', 'https://kubernetes.default.svc', '--service-account-key-file', path.join(dir, 'sa.pub'),
    '--service-account-signing-key-file', path.join(dir, 'sa.key'), '--service-cluster-ip-range', '10.0.0.0/24',
    '--allow-privileged=true', '--disable-admission-plugins', 'ServiceAccount', '--enable-priority-and-fairness=false',
    '--storage-media-type', 'application/json', '--v', '1',
  ];
  let api: ChildProcess | undefined;
  const startApi = async () => {
    const fd = openSync(apiLog, 'a');
    api = spawn(path.join(bin, 'kube-apiserver'), apiArgs, { stdio: ['ignore', fd, fd] });
    await waitHealthy(url, path.join(dir, 'ca.crt'), dir, api, apiLog);
  };
  const stopApi = async () => {
    if (!api || api.exitCode !== null) return;
    const exited = new Promise((r) => api!.once('exit', r));
    api.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (api.exitCode === null) api.kill('SIGKILL');
  };
  const kubeconfig = path.join(dir, 'admin.kubeconfig');
  const b64 = async (f: string) => (await readFile(path.join(dir, f))).toString('base64');
  await writeFile(kubeconfig, [
    'apiVersion: v1', 'kind: Config', 'current-context: test',
    'clusters:', '- name: test', '  cluster:', `    server: ${url}`, `    certificate-authority-data: ${await b64('ca.crt')}`,
    'users:', '- name: admin', '  user:', `    client-certificate-data: ${await b64('admin.crt')}`, `    client-key-data: ${await b64('admin.key')}`,
    'contexts:', '- name: test', '  context: { cluster: test, user: admin, namespace: default }', '',
  ].join('\n'), { mode: 0o600 });
  try {
    await startApi();
  } catch (e) {
    etcd.kill('SIGKILL');
    await stopApi();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  const kubectl = (args: string[], input?: string) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(path.join(bin, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });

  let served = 0;
  return {
    dir, url, kubeconfig, bin, caFile: path.join(dir, 'ca.crt'), kubectl,
    stopApiServer: stopApi,
    restart: async () => {
      await stopApi();
      await startApi();
    },
    issueServing: async (ip: string) => {
      const name = `webhook${++served}`;
      await sign(name, `/CN=${name}`, `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
      const out = await mkdtemp(path.join(dir, 'tls-'));
      await writeFile(path.join(out, 'tls.crt'), await readFile(path.join(dir, `${name}.crt`)));
      await writeFile(path.join(out, 'tls.key'), await readFile(path.join(dir, `${name}.key`)), { mode: 0o600 });
      return out;
    },
    stop: async () => {
      await stopApi();
      const exited = new Promise((r) => etcd.once('exit', r));
      etcd.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (etcd.exitCode === null) etcd.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The chart's CRD files. */
export const CRDS_DIR = path.join(ROOT, 'deploy/chart/podmotion/crds');

/** Leftovers swept, a fresh API server up, PodMotion's CRDs installed and established. */
export async function startWithCrds(): Promise<ApiServer> {
  await sweepLeftovers();
  const api = await startApiServer();
  const r = await api.kubectl(['apply', '-f', CRDS_DIR]);
  const w = r.code === 0 ? await api.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd', '-l', 'app.kubernetes.io/part-of=podmotion']) : r;
  if (w.code !== 0) {
    await api.stop();
    throw new Error(`installing the CRDs failed: ${w.stderr}`);
  }
  return api;
}
export const CHART_DIR = path.join(ROOT, 'deploy/chart/podmotion');
export { ROOT };

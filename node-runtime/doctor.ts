/** `podmotion doctor`: what this machine has and lacks for PodMotion, each line with what to do. */
import { access, readFile } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { release } from 'node:os';
import { run } from './exec.js';
import { measureCapabilities } from './capabilities.js';
import { CRIU_FEATURES, criuBinary } from './constants.js';

export interface Check {
  name: string;
  ok: boolean;
  /** Required checks fail the doctor; the others are reported only. */
  required: boolean;
  detail: string;
}

/** Kernel options the local cluster and migrations depend on, with the reason for each. */
export const KERNEL_OPTIONS: Record<string, string> = {
  CHECKPOINT_RESTORE: 'CRIU checkpoint/restore',
  NET_NS: 'nodes and pods are network namespaces',
  PID_NS: 'pods have their own pid namespace',
  VETH: 'pods and nodes are wired with veth pairs',
  VXLAN: 'the overlay between nodes',
  BRIDGE: 'the underlay between nodes',
  BPF_SYSCALL: 'eBPF traffic hold',
  NET_CLS_BPF: 'tc cls_bpf programs',
  NET_SCH_INGRESS: 'tc clsact hook',
  NF_CONNTRACK: 'conntrack state of migrated flows',
  USERFAULTFD: 'post-copy (lazy pages)',
};

/** Programs PodMotion runs, with the Debian package that provides each. */
export const TOOLS: Array<[string, string, boolean]> = [
  ['ip', 'iproute2', true], ['bridge', 'iproute2', true], ['ss', 'iproute2', true], ['nsenter', 'util-linux', true],
  ['unshare', 'util-linux', true], ['nats-server', 'nats-server', true], ['sysctl', 'procps', true],
  ['clang', 'clang', false], ['bpftool', 'bpftool', false], ['conntrack', 'conntrack', false], ['nft', 'nftables', false],
  ['iptables', 'iptables', false], ['tcpdump', 'tcpdump', false],
];

async function kernelConfig(): Promise<string | undefined> {
  try {
    return gunzipSync(await readFile('/proc/config.gz')).toString('utf8');
  } catch {
    try {
      return await readFile(`/boot/config-${release()}`, 'utf8');
    } catch {
      return undefined;
    }
  }
}

/** System directories only: under npx, node_modules/.bin comes first on PATH and holds an unrelated `nft`. */
const SYSTEM_BIN_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

async function which(cmd: string): Promise<string | undefined> {
  for (const dir of SYSTEM_BIN_DIRS) {
    try {
      await access(`${dir}/${cmd}`, fsc.X_OK);
      return `${dir}/${cmd}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs every check; never throws. */
export async function runDoctor(): Promise<Check[]> {
  const checks: Check[] = [];
  const isRoot = process.getuid?.() === 0;
  checks.push({ name: 'linux', ok: process.platform === 'linux', required: true, detail: `${process.platform} ${release()}` });
  checks.push({ name: 'root', ok: isRoot, required: true, detail: isRoot ? 'running as root' : 'run as root (namespaces, CRIU, eBPF need it)' });
  checks.push({ name: 'node', ok: Number(process.versions.node.split('.')[0]) >= 20, required: true, detail: `Node.js ${process.versions.node}` });
  const cfg = await kernelConfig();
  for (const [opt, why] of Object.entries(KERNEL_OPTIONS)) {
    const ok = cfg === undefined ? false : new RegExp(`^CONFIG_${opt}=(y|m)`, 'm').test(cfg);
    checks.push({ name: `kernel ${opt}`, ok, required: true, detail: cfg === undefined ? 'kernel config not readable' : ok ? why : `missing: needed for ${why}` });
  }
  if (cfg) {
    const sd = /^CONFIG_MEM_SOFT_DIRTY=y/m.test(cfg);
    checks.push({ name: 'kernel MEM_SOFT_DIRTY', ok: sd, required: false, detail: sd ? 'CRIU dirty tracking available' : 'absent: pre-copy finds changed pages by content hash' });
  }
  for (const [cmd, pkg, required] of TOOLS) {
    const where = await which(cmd);
    checks.push({ name: `tool ${cmd}`, ok: where !== undefined, required, detail: where ?? `missing: apt-get install ${pkg} (or: make deps)` });
  }
  const caps = await measureCapabilities(criuBinary());
  checks.push({
    name: 'criu', ok: caps.criuOk, required: true,
    detail: caps.criuOk ? `${caps.criuVersion} at ${caps.criuPath}` : caps.criuProblem ?? 'criu check failed',
  });
  for (const [f, ok] of Object.entries(caps.features)) {
    const kind = (CRIU_FEATURES as readonly string[]).includes(f) ? 'criu feature' : 'kernel feature';
    checks.push({ name: `${kind} ${f}`, ok, required: false, detail: ok ? 'supported' : 'not supported' });
  }
  try {
    const v = await run('nats-server', ['--version']);
    checks.push({ name: 'nats-server version', ok: true, required: false, detail: v.stdout.trim() });
  } catch {
    // already reported as a missing tool
  }
  return checks;
}

/**
 * A pod's TCP connections: the inventory from sock_diag (`ss`), and sequence state read straight from the
 * sockets (pm-tcpsk, through pidfd_getfd) while they are in repair mode around a checkpoint.
 */
import path from 'node:path';
import type { SocketInfo, SocketSeq } from '../bus/node-migration.js';
import { inNetns, run } from './exec.js';
import { NATIVE_DIR } from './constants.js';

/** Reading a pod's sockets is one netlink dump or one /proc walk: quick, unless the machine is in trouble. */
const SOCKETS_TIMEOUT_MS = 10_000;

/**
 * An `ss` endpoint as "a.b.c.d:port": IPv4, or IPv4-mapped IPv6 (a dual-stack server's connection from an
 * IPv4 peer); undefined for anything else (the overlay is IPv4).
 */
export function ipv4Endpoint(ssAddr: string): string | undefined {
  const plain = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(ssAddr);
  if (plain) return `${plain[1]}:${plain[2]}`;
  const mapped = /^\[::ffff:(\d{1,3}(?:\.\d{1,3}){3})\]:(\d{1,5})$/i.exec(ssAddr);
  return mapped ? `${mapped[1]}:${mapped[2]}` : undefined;
}

/** Established TCP connections in a network namespace, with their RTT. */
export async function inventory(netns: string): Promise<SocketInfo[]> {
  const r = await inNetns(netns, 'ss', ['-Htni', 'state', 'established'], { timeoutMs: SOCKETS_TIMEOUT_MS });
  const out: SocketInfo[] = [];
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    // With a state filter ss omits the state column: "recvq sendq local peer", then an indented info line.
    const cols = lines[i]!.trim().split(/\s+/);
    if (cols.length < 4 || lines[i]!.startsWith('\t') || lines[i]!.startsWith(' ')) continue;
    const info = lines[i + 1]?.startsWith('\t') || lines[i + 1]?.startsWith(' ') ? lines[i + 1]! : '';
    const rtt = /\brtt:([\d.]+)\//.exec(info);
    const local = ipv4Endpoint(cols[2]!);
    const remote = ipv4Endpoint(cols[3]!);
    if (!local || !remote) continue;
    out.push({ local, remote, state: 'ESTABLISHED', ...(rtt ? { rttMs: Number(rtt[1]) } : {}) });
  }
  return out;
}

interface TcpskLine {
  local: string;
  remote: string;
  repair?: boolean;
  sndSeq?: number;
  rcvSeq?: number;
}

/** Sequence state of every established socket in the pod's pid namespace (sockets must be in repair mode). */
export async function readSeqs(podPid: number): Promise<SocketSeq[]> {
  const r = await run(path.join(NATIVE_DIR, 'pm-tcpsk'), ['list', '--pid', String(podPid)], { timeoutMs: SOCKETS_TIMEOUT_MS });
  const out: SocketSeq[] = [];
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const s = JSON.parse(line) as TcpskLine;
    if (s.sndSeq !== undefined && s.rcvSeq !== undefined) out.push({ local: s.local, remote: s.remote, sndSeq: s.sndSeq, rcvSeq: s.rcvSeq });
  }
  return out;
}

/**
 * Takes the sockets of a pod CRIU left stopped in repair mode out of it; each sends a window probe, so
 * its peer resumes without waiting for a timer. Returns how many were in repair mode.
 */
export async function unrepair(podPid: number): Promise<number> {
  const r = await run(path.join(NATIVE_DIR, 'pm-tcpsk'), ['unrepair', '--pid', String(podPid)], { timeoutMs: SOCKETS_TIMEOUT_MS });
  return r.stdout.split('\n').filter((l) => l.includes('"wasInRepair":true')).length;
}

/** Process bookkeeping: identities that survive pid reuse, and finding every process inside a namespace. */
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { NETNS_DIR } from './constants.js';

/** A pid plus its kernel start time: a later process that reuses the pid does not match. */
export interface ProcessRef {
  pid: number;
  startTicks: number;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or undefined if gone. */
export async function startTicks(pid: number): Promise<number | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: parse after its closing paren.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const v = Number(rest[19]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export async function refOf(pid: number): Promise<ProcessRef | undefined> {
  const t = await startTicks(pid);
  return t === undefined ? undefined : { pid, startTicks: t };
}

/** True when the process is still the one recorded (same pid, same start time) and not a zombie. */
export async function isAlive(ref: ProcessRef): Promise<boolean> {
  if ((await startTicks(ref.pid)) !== ref.startTicks) return false;
  try {
    const status = await readFile(`/proc/${ref.pid}/status`, 'utf8');
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

/** True when the recorded process runs: alive and neither stopped (a checkpoint leaves it so) nor frozen. */
export async function isRunning(ref: ProcessRef): Promise<boolean> {
  if ((await startTicks(ref.pid)) !== ref.startTicks) return false;
  try {
    const status = await readFile(`/proc/${ref.pid}/status`, 'utf8');
    return /^State:\s+[RSD]/m.test(status);
  } catch {
    return false;
  }
}

/** Sends a signal to the recorded process only if it is still that process. */
export async function signalRef(ref: ProcessRef, sig: NodeJS.Signals): Promise<boolean> {
  if (!(await isAlive(ref))) return false;
  try {
    process.kill(ref.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Waits up to timeoutMs for the process to exit; polling is fine here, it happens on teardown only. */
export async function waitGone(ref: ProcessRef, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isAlive(ref))) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !(await isAlive(ref));
}

/** TERM, wait, then KILL: stops a recorded process for sure. */
export async function stopRef(ref: ProcessRef, graceMs = 2000): Promise<void> {
  if (!(await signalRef(ref, 'SIGTERM'))) return;
  if (await waitGone(ref, graceMs)) return;
  await signalRef(ref, 'SIGKILL');
  await waitGone(ref, 2000);
}

/** Inode of a named network namespace, or undefined if it does not exist. */
export async function netnsInode(name: string): Promise<number | undefined> {
  try {
    return (await stat(`${NETNS_DIR}/${name}`)).ino;
  } catch {
    return undefined;
  }
}

/** Every pid whose network namespace is one of the given inodes. */
export async function pidsInNetns(inodes: ReadonlySet<number>): Promise<number[]> {
  if (inodes.size === 0) return [];
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const link = await readlink(`/proc/${entry}/ns/net`);
      const m = /net:\[(\d+)\]/.exec(link);
      if (m && inodes.has(Number(m[1]))) found.push(Number(entry));
    } catch {
      // The process exited while we looked: nothing to do.
    }
  }
  return found;
}

/** Children of a process (by PPid), for finding the pod init that `unshare --fork` starts. */
export async function childrenOf(pid: number): Promise<number[]> {
  const kids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = await readFile(`/proc/${entry}/status`, 'utf8');
      const m = /^PPid:\s+(\d+)/m.exec(status);
      if (m && Number(m[1]) === pid) kids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return kids;
}

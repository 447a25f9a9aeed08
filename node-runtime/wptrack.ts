/**
 * Which pages of a running pod were written, without soft-dirty (this kernel has none): pm-wptrack
 * (node-runtime/native/pm-wptrack.c) write-protects the pod's private memory with asynchronous userfaultfd
 * and reads written pages back with PAGEMAP_SCAN. One helper per migration on the source, alive from the
 * first pre-copy round to the freeze; if it dies, its userfaultfds close and the pod's memory is plain again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { NodeOperationError } from '../bus/errors.js';
import { NATIVE_DIR } from './constants.js';
import { LineChannel } from '../common/line-channel.js';

/** A command reads the pod's page tables, not its memory: seconds mean trouble. */
const COMMAND_TIMEOUT_MS = 60_000;

export interface ArmStats {
  processes: number;
  ranges: number;
  bytes: number;
}

export interface FinalStats {
  cleanBytes: number;
  writtenBytes: number;
}

export class WriteTracker {
  private readonly channel: LineChannel;
  private closed = false;

  private constructor(private readonly child: ChildProcess) {
    this.channel = new LineChannel(child.stdout!, child.stdin!);
    child.once('close', () => {
      this.closed = true;
      this.channel.end(() => new NodeOperationError('write tracking ended'));
    });
  }

  /** Starts tracking nothing yet; `arm` takes the pod's processes in. */
  static start(rootPid: number): WriteTracker {
    return new WriteTracker(spawn(path.join(NATIVE_DIR, 'pm-wptrack'), ['--pid', String(rootPid)], { stdio: ['pipe', 'pipe', 'ignore'] }));
  }

  /**
   * From now on every write of the pod marks its page (new processes and mappings included). With
   * `writtenFile`, first writes there the ranges written since the previous `arm` (new mappings whole).
   */
  arm(writtenFile?: string): Promise<ArmStats & { writtenBytes: number }> {
    return this.command(writtenFile ? `arm ${writtenFile}` : 'arm') as Promise<ArmStats & { writtenBytes: number }>;
  }

  /** With the pod frozen: writes the ranges not written since the last `arm` to `file`, then stops tracking. */
  final(file: string): Promise<FinalStats> {
    return this.command(`final ${file}`) as Promise<FinalStats>;
  }

  /** Stops tracking; resolves once the helper is gone and with it the write-protection of the pod's memory. */
  stop(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const gone = new Promise<void>((resolve) => this.child.once('close', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => { if (!this.closed) this.child.kill('SIGKILL'); }, COMMAND_TIMEOUT_MS);
    timer.unref();
    return gone.finally(() => clearTimeout(timer));
  }

  private async command(cmd: string): Promise<unknown> {
    const line = await this.channel.send(cmd, {
      ms: COMMAND_TIMEOUT_MS,
      onTimeout: () => {
        this.child.kill('SIGKILL');
        return new NodeOperationError(`write tracking: no answer to ${cmd.split(' ')[0]} within ${COMMAND_TIMEOUT_MS} ms`);
      },
    });
    const r = JSON.parse(line) as { ok: boolean; error?: string };
    if (!r.ok) throw new NodeOperationError(`write tracking: ${r.error ?? 'failed'}`);
    return r;
  }
}

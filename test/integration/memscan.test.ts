/** pm-memscan on a real process: it finds the working set and measures its dirty rate without stopping it. */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { scanMemory } from '../../node-runtime/memscan.js';
import { childrenOf } from '../../node-runtime/procs.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';

/** A 64 MiB working set rewritten at 20 MiB/s, in its own pid and network namespaces (its port is nobody else's). */
async function startWriter(t: ExecutionContext): Promise<number> {
  const holder = spawn('unshare', ['--pid', '--net', '--fork', '--kill-child', PYTHON, path.join(WORKLOADS, 'mem_writer.py'), '7099', '64', '20'],
    { stdio: 'ignore' });
  t.teardown(() => holder.kill('SIGKILL'));
  let pid: number | undefined;
  for (let i = 0; i < 100 && pid === undefined; i++) {
    await new Promise((r) => setTimeout(r, 50));
    pid = (await childrenOf(holder.pid!))[0];
  }
  t.truthy(pid, 'the writer started');
  return pid!;
}

test('a 64 MiB working set dirtied at 20 MiB/s is measured as such', async (t) => {
  const pid = await startWriter(t);
  await new Promise((r) => setTimeout(r, 1500)); // past its initial fill
  const s = await scanMemory(pid, 1000);
  t.true(s.bytes >= 64 * 1024 * 1024, `found ${s.bytes} bytes of writable memory`);
  const mibPerS = s.dirtyBytesPerSec / (1024 * 1024);
  t.true(mibPerS > 10 && mibPerS < 40, `dirty rate ${mibPerS.toFixed(1)} MiB/s for a 20 MiB/s writer`);
  const idle = await scanMemory(pid, 0);
  t.is(idle.intervalMs, 0);
  t.is(idle.changedPages, 0, 'one pass measures size only');
  await t.throwsAsync(scanMemory(pid, -1), { message: /interval must be/ });
});

test('this kernel tracks written pages without soft-dirty: userfaultfd async write-protect and PAGEMAP_SCAN', async (t) => {
  const { run } = await import('../../node-runtime/exec.js');
  const { NATIVE_DIR } = await import('../../node-runtime/constants.js');
  const r = JSON.parse((await run(path.join(NATIVE_DIR, 'pm-wpcheck'), [])).stdout) as { ok: boolean; pages: number; written: number; scanMs: number };
  // Every 97th page of 64 MiB written by the process, and 64 more by the kernel (read() into them, with a
  // user-mode-only userfaultfd): exactly those reported, none after re-protecting (the helper checks both).
  t.true(r.ok);
  t.is(r.pages, 16384);
  t.is(r.written, Math.ceil(16384 / 97) + 64);
  t.true(r.scanMs < 1000, `scan of 64 MiB took ${r.scanMs} ms`);
});

test('pm-wptrack tracks a running writer\'s writes and leaves it as it was', async (t) => {
  const { readdir, readFile, rm } = await import('node:fs/promises');
  const { WriteTracker } = await import('../../node-runtime/wptrack.js');
  const pid = await startWriter(t);
  await new Promise((r) => setTimeout(r, 1500));
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  const tracker = WriteTracker.start(pid);
  const armed = await tracker.arm();
  t.is(armed.processes, 1);
  t.true(armed.bytes >= 64 << 20, `tracking ${armed.bytes} bytes`);
  t.is((await readdir(`/proc/${pid}/fd`)).length, fds, 'the writer keeps no new file descriptor');
  await new Promise((r) => setTimeout(r, 1000));
  const file = `/tmp/pm-wptrack-test-${process.pid}.bin`;
  t.teardown(() => rm(file, { force: true }));
  const again = await tracker.arm(file);
  const mib = again.writtenBytes / 2 ** 20;
  t.true(mib > 10 && mib < 40, `${mib.toFixed(1)} MiB written in a second by a 20 MiB/s writer`);
  t.is((await readFile(file)).length % 24, 0, 'whole range records');
  const final = await tracker.final(file);
  t.true(final.cleanBytes > 0);
  t.false((await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n').some((l) => l.startsWith('VmFlags:') && l.includes(' uw')),
    'no mapping stays write-protected once tracking stops');
  await tracker.stop();
  t.true((await readFile(`/proc/${pid}/status`, 'utf8')).includes('State:\tS') || (await readFile(`/proc/${pid}/status`, 'utf8')).includes('State:\tR'),
    'the writer runs on');
});

/**
 * run(): commands started by the resident helper (pm-spawnd) behave as forked ones do — output, exit
 * codes, input, timeouts, a missing program — and the helper really is the one starting them.
 */
import test from 'ava';
import { run } from '../../node-runtime/exec.js';

const ppidOf = async () => Number((await run('sh', ['-c', 'echo $PPID'])).stdout.trim());

test.serial('commands are started by the helper, not by forking this process', async (t) => {
  t.not(await ppidOf(), process.pid);
  process.env['PODMOTION_SPAWND'] = 'off';
  try {
    t.is(await ppidOf(), process.pid);
  } finally {
    delete process.env['PODMOTION_SPAWND'];
  }
});

for (const mode of ['helper', 'direct'] as const) {
  test.serial(`${mode}: output, exit codes, input, timeouts and a missing program`, async (t) => {
    if (mode === 'direct') process.env['PODMOTION_SPAWND'] = 'off';
    try {
      t.deepEqual(await run('sh', ['-c', 'cat; echo oops >&2; exit 3'], { input: 'hello', okCodes: [3] }), { code: 3, stdout: 'hello', stderr: 'oops\n' });
      await t.throwsAsync(run('sh', ['-c', 'echo bad thing >&2; exit 4']), { message: 'sh -c echo bad thing >&2; exit 4: exit 4: bad thing' });
      await t.throwsAsync(run('/nonexistent/pm-x', []), { message: /^cannot run \/nonexistent\/pm-x: .*ENOENT/ });
      const t0 = Date.now();
      await t.throwsAsync(run('sleep', ['10'], { timeoutMs: 200 }), { message: 'sleep 10: killed by SIGKILL (timeout 200 ms)' });
      t.true(Date.now() - t0 < 5_000);
      // No input: stdin is empty, not this process's.
      t.is((await run('wc', ['-c'])).stdout.trim(), '0');
      const big = 'x'.repeat(3 << 20);
      t.is((await run('wc', ['-c'], { input: big })).stdout.trim(), String(big.length));
      const many = await Promise.all(Array.from({ length: 40 }, (_, i) => run('echo', [`n${i}`])));
      t.deepEqual(many.map((r) => r.stdout.trim()), Array.from({ length: 40 }, (_, i) => `n${i}`));
      // Output is kept up to 1 MiB per stream.
      t.is((await run('head', ['-c', '3000000', '/dev/zero'])).stdout.length, 1 << 20);
    } finally {
      delete process.env['PODMOTION_SPAWND'];
    }
  });
}

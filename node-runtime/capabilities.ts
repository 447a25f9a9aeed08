/** What a node can do: kernel, CRIU version, `criu check` and named CRIU features, measured at agent start. */
import { release } from 'node:os';
import type { Capabilities } from '../bus/messages.js';
import { run } from './exec.js';
import path from 'node:path';
import { CRIU_FEATURES, NATIVE_DIR, criuBinary } from './constants.js';
import { ensureCriuRunDir, ensureImagesRoot } from './criu-rundir.js';

/** `criu check` probes the kernel (~250 ms here); allow for a loaded machine. */
const CRIU_CHECK_TIMEOUT_MS = 30_000;

/** Measures this node's capabilities. Never throws: what is missing is reported, not fatal. */
export async function measureCapabilities(criu = criuBinary()): Promise<Capabilities> {
  await ensureCriuRunDir();
  await ensureImagesRoot();
  const caps: Capabilities = { kernel: release(), criuOk: false, features: {} };
  try {
    const v = await run(criu, ['--version'], { timeoutMs: CRIU_CHECK_TIMEOUT_MS });
    caps.criuVersion = /Version:\s*(\S+)/.exec(v.stdout)?.[1] ?? v.stdout.trim().split('\n')[0];
    caps.criuPath = criu;
  } catch (e) {
    caps.criuProblem = `CRIU not usable at ${criu}: ${(e as Error).message.split('\n')[0]} (run: make deps)`;
    return caps;
  }
  const [check, ...features] = await Promise.allSettled([
    run(criu, ['check'], { timeoutMs: CRIU_CHECK_TIMEOUT_MS }),
    ...CRIU_FEATURES.map((f) => run(criu, ['check', '--feature', f], { timeoutMs: CRIU_CHECK_TIMEOUT_MS })),
  ]);
  if (check?.status === 'fulfilled') {
    caps.criuOk = true;
  } else if (check) {
    caps.criuProblem = `criu check failed: ${(check.reason as Error).message.split('\n')[0]}`;
  }
  CRIU_FEATURES.forEach((f, i) => {
    caps.features[f] = features[i]?.status === 'fulfilled';
  });
  // Written-page tracking without soft-dirty: asynchronous userfaultfd write-protect read with PAGEMAP_SCAN.
  caps.features['uffd-wp-async'] = await run(path.join(NATIVE_DIR, 'pm-wpcheck'), [], { timeoutMs: CRIU_CHECK_TIMEOUT_MS })
    .then((r) => (JSON.parse(r.stdout) as { ok: boolean }).ok, () => false);
  return caps;
}

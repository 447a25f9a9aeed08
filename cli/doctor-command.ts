/** `podmotion doctor`: prints what is present and what is missing; exit 1 when a required check fails. */
import { runDoctor } from '../node-runtime/doctor.js';
import { parse } from './args.js';
import { printJson } from './output.js';

export async function doctorCommand(argv: string[]): Promise<number> {
  const p = parse(argv, {});
  const checks = await runDoctor();
  const failed = checks.filter((c) => c.required && !c.ok);
  if (p.values['json']) {
    printJson({ ok: failed.length === 0, checks });
  } else {
    for (const c of checks) {
      const mark = c.ok ? 'ok  ' : c.required ? 'FAIL' : 'warn';
      process.stdout.write(`${mark}  ${c.name.padEnd(28)} ${c.detail}\n`);
    }
    process.stdout.write(failed.length === 0 ? '\nall required checks passed\n' : `\n${failed.length} required check(s) failed: ${failed.map((c) => c.name).join(', ')}\n`);
  }
  return failed.length === 0 ? 0 : 1;
}

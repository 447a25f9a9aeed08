/**
 * The statechart inspector in headless Chromium (playwright-core, Debian's chromium) against a live local
 * cluster: the list shows a running migration, the highlighted state follows the phases, the page ends on
 * Complete with the freeze window; the JSON behind it is the CLI's --json; an unknown migration gets a
 * clear 404 page; cancel is refused unless enabled, and then needs the token. Screenshots of each key state
 * go to test-artifacts/.
 */
import test from 'ava';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { chromium, type Browser, type Page } from 'playwright-core';
import { cli, cliJson } from '../integration/helpers.js';
import { CLI_ENTRY, PROJECT_ROOT } from '../../node-runtime/constants.js';
import { bringUp, tearDown, type Bed } from './helpers.js';

const CLUSTER = 'itin';
const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts', 'inspector');
const CHROMIUM = process.env['PODMOTION_CHROMIUM'] ?? '/usr/bin/chromium';
const PHASES = ['SocketInventory', 'Validating', 'DestinationPrewarm', 'PreCopyMemory', 'ZeroWindowArm', 'FinalFreeze',
  'OverlayHandoff', 'Restore', 'DisengageHold', 'TCPVerifying', 'ServiceVerifying', 'Cutover'];

let bed: Bed | undefined;
let browser: Browser | undefined;
const servers: ChildProcess[] = [];

/** Starts `podmotion inspect` on a free port; resolves with what it printed (--json). */
async function inspect(extra: string[] = []): Promise<{ url: string; cancel: boolean; tokenFile?: string }> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'inspect', '--cluster', CLUSTER, '--port', '0', '--json', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(child);
  let text = '';
  for await (const line of createInterface({ input: child.stdout! })) {
    text += line;
    if (line === '}') break;
  }
  return JSON.parse(text);
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

test.before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  bed = await bringUp(CLUSTER);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
test.after.always(async () => {
  await browser?.close();
  for (const s of servers) s.kill('SIGTERM');
  await tearDown(bed, CLUSTER);
});

test.serial('the list shows a running migration, its page follows the phases and ends on Complete with the freeze window', async (t) => {
  const { url } = await inspect();
  const page = await browser!.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  await page.waitForSelector('text=live');
  await shot(page, '01-list-empty');

  // Paused after pre-copy's work (a test hook): long enough to see it running in the list and on its page.
  const running = cli(['migrate', 'counter', '--to-node', 'node-2', '--pause-at', 'PreCopyMemory', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  const row = page.locator('#migrations tbody tr').first();
  await row.waitFor({ timeout: 30_000 });
  const id = (await row.getAttribute('data-id'))!;
  t.regex(id, /^counter-/);
  // Locators, not page functions: the page's CSP forbids evaluating strings, rightly.
  await page.locator('#migrations tbody tr[data-phase="PreCopyMemory"]').first().waitFor({ timeout: 30_000 });
  t.is(await row.locator('td.phase').textContent(), 'PreCopyMemory');
  t.is(await row.getAttribute('class'), 'running');
  await shot(page, '02-list-running');

  // Keyboard: the row's link is reachable with Tab and opens the migration.
  await page.keyboard.press('Tab'); // skip link
  let focused = '';
  for (let i = 0; i < 6 && !focused.includes(`/migrations/${id}`); i++) {
    await page.keyboard.press('Tab');
    focused = (await page.locator(':focus').getAttribute('href').catch(() => null)) ?? '';
  }
  t.true(focused.endsWith(`/migrations/${id}`), 'the migration link takes keyboard focus');
  await Promise.all([page.waitForURL(`**/migrations/${id}`), page.keyboard.press('Enter')]);

  // The highlighted state follows the phases, live.
  const seen: string[] = [];
  const current = async () => (await page.locator('#statechart [aria-current="step"]').first().getAttribute('data-state', { timeout: 2000 }).catch(() => null)) ?? '';
  await page.waitForSelector('#statechart');
  for (let i = 0; i < 600; i++) {
    const c = await current();
    if (c && seen.at(-1) !== c) {
      seen.push(c);
      await shot(page, `03-state-${String(seen.length).padStart(2, '0')}-${c}`);
    }
    if (c === 'Complete') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const s = JSON.parse((await running).stdout);
  t.is(s.phase, 'Complete');
  t.true(seen.includes('PreCopyMemory'), `seen: ${seen.join(' → ')}`);
  t.is(seen.at(-1), 'Complete');
  const order = seen.filter((x) => x !== 'Complete').map((x) => PHASES.indexOf(x));
  t.deepEqual(order, [...order].sort((a, b) => a - b), `the highlight moves forward only: ${seen.join(' → ')}`);
  t.true(seen.length >= 3, `followed the phases: ${seen.join(' → ')}`);

  // The end: Complete, with the freeze window, every phase on the path taken, connections kept.
  await page.waitForSelector('#phase[data-phase="Complete"]');
  const freeze = await page.locator('#freeze').textContent();
  t.regex(freeze ?? '', /^[\d.]+ ms$/);
  t.is(Number(freeze!.replace(' ms', '')), Math.round(s.outcome.freezeMs * 10) / 10);
  for (const p of PHASES) t.is(await page.getAttribute(`#statechart [data-state="${p}"]`, 'data-status'), 'visited', p);
  t.is(await page.getAttribute('#statechart [data-state="RollingBack"]', 'data-status'), 'idle');
  t.deepEqual(await page.locator('#connections tbody td').allTextContents(), ['8', '8', '0', '0'], 'connections, preserved, seq_delta max, RST');
  t.is(await page.locator('#conditions tbody tr').count(), s.conditions.length);
  t.true(await page.locator('#rounds rect').count() >= 1, 'pre-copy rounds are drawn');
  t.is(await page.locator('#cancel').count(), 0, 'read-only: no cancel form');
  await shot(page, '04-complete');

  // The JSON behind the page is the CLI's --json.
  const api = await (await fetch(`${url}/api/migrations/${id}`)).json();
  t.deepEqual(api, await cliJson(['status', id, '--cluster', CLUSTER]));
  const list = await (await fetch(`${url}/api/migrations`)).json();
  t.deepEqual(list, await cliJson(['list', '--cluster', CLUSTER]));
  t.deepEqual((await bed!.load.mark()).errors, []);
});

test.serial('an unknown migration gets a clear 404 page', async (t) => {
  const { url } = await inspect();
  const page = await browser!.newPage();
  const r = await page.goto(`${url}/migrations/nope-123`);
  t.is(r?.status(), 404);
  t.is(await page.locator('.notfound').textContent(), `Migration nope-123 not found in cluster ${CLUSTER}.`);
  await shot(page, '05-not-found');
  const j = await fetch(`${url}/api/migrations/nope-123`);
  t.is(j.status, 404);
  t.regex(((await j.json()) as any).error.message, /migration nope-123 not found/);
});

test.serial('cancel: refused when read-only; when enabled, only with the token', async (t) => {
  const ro = await inspect();
  const list = await cliJson(['list', '--cluster', CLUSTER]);
  const done = list.migrations[0].id;
  const r = await fetch(`${ro.url}/api/migrations/${done}/cancel`, { method: 'POST' });
  t.is(r.status, 403);
  t.regex(((await r.json()) as any).error.message, /read-only/);

  const rw = await inspect(['--allow-cancel']);
  t.true(rw.cancel);
  const token = (await readFile(rw.tokenFile!, 'utf8')).trim();
  const running = cli(['migrate', 'counter', '--to-node', 'node-3', '--pause-at', 'PreCopyMemory', '--wait', '--json', '--cluster', CLUSTER], 180_000);
  let id = '';
  for (let i = 0; i < 200 && !id; i++) {
    id = (await cliJson(['list', '--active', '--cluster', CLUSTER])).migrations[0]?.id ?? '';
    await new Promise((res) => setTimeout(res, 50));
  }
  const page = await browser!.newPage();
  await page.goto(`${rw.url}/migrations/${id}`);
  await page.waitForSelector('#cancel');
  const denied = await fetch(`${rw.url}/api/migrations/${id}/cancel`, { method: 'POST', headers: { authorization: 'Bearer wrong' } });
  t.is(denied.status, 401);
  await page.fill('#token', token);
  await page.click('#cancel button');
  await page.waitForSelector('#cancel-result:has-text("rollback initiated")', { timeout: 30_000 });
  await page.waitForSelector('#phase[data-phase="Cancelled"]', { timeout: 60_000 });
  t.is(await page.getAttribute('#statechart [data-state="Cancelled"]', 'data-status'), 'ended');
  t.is(await page.getAttribute('#statechart [data-state="RollingBack"]', 'data-status'), 'visited');
  await shot(page, '06-cancelled');
  t.is(JSON.parse((await running).stdout).phase, 'Cancelled');
  t.deepEqual((await bed!.load.mark()).errors, []);
});

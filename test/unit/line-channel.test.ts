// LineChannel (common/line-channel.ts): a helper that dies mid-conversation fails the commands, never the process.
import test from 'ava';
import { createServer, connect, type Socket } from 'node:net';
import { spawn } from 'node:child_process';
import { LineChannel } from '../../common/line-channel.js';

test('a duplex socket whose peer is gone: send rejects with one line, no uncaught error', async (t) => {
  const server = createServer((peer) => peer.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sock: Socket = connect((server.address() as { port: number }).port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  const ch = new LineChannel(sock, sock);
  await new Promise((r) => setTimeout(r, 100));
  // Writes into a reset socket fail (EPIPE/ECONNRESET); the first may still be buffered before the error lands.
  const sends = [ch.send('one'), new Promise((r) => setTimeout(r, 100)).then(() => ch.send('two'))];
  for (const s of sends) await t.throwsAsync(s as Promise<string>, { message: /the helper's channel failed|write after end|EPIPE|ECONNRESET|closed/ });
  server.close();
});

test('a helper process that exits: commands sent to it fail', async (t) => {
  const child = spawn('/bin/true', [], { stdio: ['pipe', 'pipe', 'ignore'] });
  await new Promise((r) => child.once('exit', r));
  const ch = new LineChannel(child.stdout!, child.stdin!);
  await t.throwsAsync(ch.send('hello'), { message: /the helper's channel failed/ });
});

test('lines a helper announces unasked go to the notice handler, not to the command waiting', async (t) => {
  const script = 'read cmd; echo "@encoded pages-1.img.pmdelta"; echo "answer to $cmd"; echo "@encoded pages-2.img.pmdelta"; read rest';
  const child = spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'pipe', 'ignore'] });
  t.teardown(() => child.kill());
  const notices: string[] = [];
  const ch = new LineChannel(child.stdout!, child.stdin!, (n) => notices.push(n));
  t.is(await ch.send('hello'), 'answer to hello');
  for (let i = 0; i < 100 && notices.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(notices, ['encoded pages-1.img.pmdelta', 'encoded pages-2.img.pmdelta']);
});

/** A node without a working CRIU: it registers saying so, and a migration to it is refused in one line. */
import test from 'ava';
import path from 'node:path';
import { cli, cliJson } from '../integration/helpers.js';
import { PYTHON, WORKLOADS } from '../../cli/load.js';

const CLUSTER = 'itnocriu';

test.after.always(async () => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  delete process.env['PODMOTION_CRIU'];
});

test('migrating to a node whose CRIU does not work is refused with one line', async (t) => {
  await cli(['cluster', 'down', '--cluster', CLUSTER]);
  process.env['PODMOTION_CRIU'] = '/nonexistent/criu';
  await cliJson(['cluster', 'up', '--nodes', '2', '--cluster', CLUSTER]);
  const status = await cliJson(['cluster', 'status', '--cluster', CLUSTER]);
  t.deepEqual(status.nodes.map((n: { criu: string }) => n.criu), ['broken', 'broken']);
  await cliJson(['pod', 'run', 'web', '--node', 'node-1', '--port', '7000', '--cluster', CLUSTER, '--',
    PYTHON, path.join(WORKLOADS, 'counter_server.py'), '7000']);
  const r = await cli(['migrate', 'web', '--to-node', 'node-2', '--strategy', 'Cold', '--cluster', CLUSTER]);
  t.is(r.code, 1);
  t.regex(r.stderr, /^podmotion: node node-2 has no working CRIU: CRIU not usable at \/nonexistent\/criu: .*\(run: make deps\)\n$/);
  const list = await cliJson(['pod', 'list', '--cluster', CLUSTER]);
  t.is(list.pods[0].node, 'node-1');
});

/** Socket endpoints as ss prints them, normalized to IPv4 "a.b.c.d:port". */
import test from 'ava';
import { ipv4Endpoint } from '../../node-runtime/sockets.js';

const cases: Array<[string, string | undefined]> = [
  ['10.244.1.10:7000', '10.244.1.10:7000'],
  ['[::ffff:10.244.0.0]:52754', '10.244.0.0:52754'],
  ['[::FFFF:10.0.0.1]:1', '10.0.0.1:1'],
  ['[fe80::1]:22', undefined],
  ['[::1]:80', undefined],
  ['*:7000', undefined],
];
for (const [input, want] of cases) {
  test(`ipv4Endpoint(${input})`, (t) => t.is(ipv4Endpoint(input), want));
}

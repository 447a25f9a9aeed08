/**
 * TLS-PSK between two node agents, as the image stream (index.ts) and the post-copy page channel (lazy.ts)
 * use it: TLS 1.2 with a per-migration pre-shared key and AES-GCM (authenticated encryption, no certificates
 * to manage per migration). Each channel has its own PSK identity, so one can never be taken for the other.
 */
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';

const PSK_CIPHERS = 'PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305';

/** A server accepting only peers that know `key` under `identity`; failed handshakes are dropped quietly. */
export function pskServer(identity: string, key: Buffer, onSecure: (sock: tls.TLSSocket) => void): tls.Server {
  const server = tls.createServer({
    ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
    pskCallback: (_sock, id) => (id === identity ? key : null),
  }, onSecure);
  server.on('tlsClientError', () => {});
  return server;
}

/** Listens on an ephemeral port of `host`; resolves with the port. */
export async function listenEphemeral(server: tls.Server, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

/** Connects to a pskServer. */
export function pskConnect(o: { host: string; port: number; key: Buffer; identity: string }): tls.TLSSocket {
  return tls.connect({
    host: o.host, port: o.port, ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
    pskCallback: () => ({ psk: o.key, identity: o.identity }),
    checkServerIdentity: () => undefined,
  });
}

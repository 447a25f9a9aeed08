/**
 * The statechart inspector: a live view of every migration, served by fastify. The page (static files in
 * inspector/static, no CDN) lists migrations and draws each one's statechart, phase timeline, pre-copy
 * rounds, connections and conditions, updated from the bus over Server-Sent Events. The JSON endpoints
 * behind it carry the same data as the CLI's --json (`podmotion list --json`, `podmotion status ID --json`).
 * Read-only unless started with cancel enabled; then a cancel needs the bearer token it was given.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { timingSafeEqual } from 'node:crypto';
import type { NatsConnection } from '@nats-io/nats-core';
import Fastify, { type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { apiCodecs as c } from '../actors/coordinator/codecs.js';
import { NotFoundError, oneLine, PodMotionError } from '../bus/errors.js';
import { request } from '../bus/rpc.js';
import { API_ROOT, Subjects } from '../bus/subjects.js';
import { isTerminal, outcomeOf, PHASES, type MigrationStatus } from '../machines/index.js';

/** The page's files: the sources' static folder (next to this file's source, not its compiled copy). */
const STATIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../inspector/static');
const FILES: Record<string, string> = { 'app.js': 'text/javascript; charset=utf-8', 'style.css': 'text/css; charset=utf-8' };
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HEARTBEAT_MS = 15_000;

export interface InspectorOptions {
  nc: NatsConnection;
  log: Logger;
  port: number;
  host?: string;
  /** Cancel from the page, with this bearer token; absent: read-only. */
  cancelToken?: string;
  cluster: string;
}

export interface Inspector {
  url: string;
  close(): Promise<void>;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function shell(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · PodMotion inspector</title><link rel="stylesheet" href="/static/style.css"></head>
<body><a class="skip" href="#main">Skip to content</a>
<header class="top"><a href="/" class="brand">PodMotion inspector</a></header>
<main id="main" tabindex="-1">${body}</main>
<script type="module" src="/static/app.js"></script></body></html>
`;
}

function errorJson(reply: FastifyReply, code: number, e: unknown) {
  const err = e instanceof PodMotionError ? { code: e.code, message: oneLine(e) } : { code: 'INTERNAL', message: oneLine(e) };
  return reply.code(code).type('application/json').send({ error: err });
}

export async function startInspector(o: InspectorOptions): Promise<Inspector> {
  // Live streams stay open: closing must not wait for the browsers to go.
  const app = Fastify({ logger: false, forceCloseConnections: true });
  const statusOf = async (id: string) => (await request(o.nc, Subjects.api('status'), c.ref, c.statusReply, { id })).status as MigrationStatus;

  app.addHook('onSend', async (_req, reply) => {
    // Everything the page needs is served from here: nothing else may load or run.
    reply.header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'");
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
  });

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(shell('Migrations',
    `<h1>Migrations <span class="cluster">cluster ${escapeHtml(o.cluster)}</span></h1><div id="app" data-view="list" data-cancel="${o.cancelToken ? 'on' : 'off'}"><p class="muted">Loading…</p></div>`)));

  app.get<{ Params: { id: string } }>('/migrations/:id', async (req, reply) => {
    const id = req.params.id;
    const missing = () => reply.code(404).type('text/html; charset=utf-8').send(shell('Not found',
      `<h1>Migration not found</h1><p class="notfound">Migration <code>${escapeHtml(id)}</code> not found in cluster ${escapeHtml(o.cluster)}.</p><p><a href="/">All migrations</a></p>`));
    if (!ID_PATTERN.test(id)) return missing();
    try {
      await statusOf(id);
    } catch (e) {
      if (e instanceof NotFoundError && !e.retryable) return missing();
      throw e;
    }
    return reply.type('text/html; charset=utf-8').send(shell(id,
      `<div id="app" data-view="migration" data-id="${escapeHtml(id)}" data-cancel="${o.cancelToken ? 'on' : 'off'}"><p class="muted">Loading…</p></div>`));
  });

  app.get<{ Params: { file: string } }>('/static/:file', async (req, reply) => {
    const type = FILES[req.params.file];
    if (!type) return reply.code(404).send('not found');
    return reply.type(type).header('cache-control', 'no-cache').send(await readFile(path.join(STATIC_DIR, req.params.file)));
  });

  // The same JSON as the CLI's --json.
  app.get<{ Querystring: { active?: string } }>('/api/migrations', async (req, reply) => {
    try {
      return await request(o.nc, Subjects.api('list'), c.listReq, c.listReply, { active: req.query.active === 'true' });
    } catch (e) {
      return errorJson(reply, 502, e);
    }
  });
  app.get<{ Params: { id: string } }>('/api/migrations/:id', async (req, reply) => {
    try {
      const s = await statusOf(req.params.id);
      return { ...s, outcome: outcomeOf(s) };
    } catch (e) {
      return errorJson(reply, e instanceof NotFoundError && !e.retryable ? 404 : 502, e);
    }
  });
  app.get('/api/config', async () => ({ cluster: o.cluster, cancel: o.cancelToken !== undefined, phases: PHASES }));

  app.post<{ Params: { id: string } }>('/api/migrations/:id/cancel', async (req, reply) => {
    if (!o.cancelToken) return reply.code(403).send({ error: { code: 'FORBIDDEN', message: 'cancelling is disabled: the inspector is read-only (start it with --allow-cancel)' } });
    const given = Buffer.from((req.headers.authorization ?? '').replace(/^Bearer\s+/i, ''));
    const want = Buffer.from(o.cancelToken);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      return reply.code(401).header('www-authenticate', 'Bearer').send({ error: { code: 'UNAUTHORIZED', message: 'cancel needs the inspector\'s token (Authorization: Bearer TOKEN)' } });
    }
    try {
      const r = await request(o.nc, Subjects.api('cancel'), c.ref, c.cancelReply, { id: req.params.id });
      o.log.info({ migration: req.params.id, accepted: r.accepted }, 'cancel from the inspector');
      return r;
    } catch (e) {
      return errorJson(reply, e instanceof NotFoundError && !e.retryable ? 404 : 502, e);
    }
  });

  // Live updates: every phase and progress event of one migration (or of all), as Server-Sent Events.
  const stream = (subject: string, filterId?: string) => async (req: { raw: NodeJS.EventEmitter }, reply: FastifyReply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': connected\n\n');
    const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    const sub = o.nc.subscribe(subject, {
      callback: (err, m) => {
        if (err) return;
        try {
          if (m.subject.endsWith('.progress')) {
            const p = c.progress.decode(m.data);
            if (!filterId || p.id === filterId) send('progress', p);
          } else {
            const ev = c.event.decode(m.data);
            if (filterId && ev.id !== filterId) return;
            const s = ev.status as MigrationStatus;
            const outcome = outcomeOf(s);
            send('phase', filterId ? { ...s, outcome } : {
              id: s.spec.id, pod: s.spec.pod, sourceNode: s.spec.sourceNode, destinationNode: s.spec.destinationNode, strategy: s.spec.strategy,
              phase: s.phase, startedAtMs: s.startedAtMs, ...(s.endedAtMs !== undefined ? { endedAtMs: s.endedAtMs } : {}),
              ...(outcome.freezeMs !== undefined ? { freezeMs: outcome.freezeMs } : {}), terminal: isTerminal(s.phase),
            });
          }
        } catch (e) {
          o.log.warn({ err: oneLine(e) }, 'undecodable event not forwarded');
        }
      },
    });
    const beat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    req.raw.on('close', () => {
      clearInterval(beat);
      sub.unsubscribe();
    });
  };
  app.get('/api/events', stream(`${API_ROOT}.events.migration.>`));
  app.get<{ Params: { id: string } }>('/api/migrations/:id/events', (req, reply) => {
    if (!ID_PATTERN.test(req.params.id)) return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `migration ${req.params.id} not found` } });
    return stream(Subjects.migrationAll(req.params.id), req.params.id)(req, reply);
  });

  app.setNotFoundHandler((_req, reply) => reply.code(404).type('text/html; charset=utf-8').send(shell('Not found', '<h1>Not found</h1><p class="notfound">There is no such page.</p><p><a href="/">All migrations</a></p>')));
  app.setErrorHandler((e, _req, reply) => {
    o.log.warn({ err: oneLine(e) }, 'inspector request failed');
    return reply.code(502).type('text/html; charset=utf-8').send(shell('Error', `<h1>The bus did not answer</h1><p>${escapeHtml(oneLine(e))}</p>`));
  });

  const url = await app.listen({ port: o.port, host: o.host ?? '127.0.0.1' });
  return { url, close: () => app.close() };
}

/**
 * PodMotion's API as a NATS micro service: discoverable with `nats micro ls` / `$SRV.PING`, with INFO and
 * STATS answered per the micro protocol (ADR-32), and each endpoint a queue-group subscription serving
 * msgpack messages through bus/rpc.ts.
 */
import { nuid, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import type { Codec } from './codec.js';
import { serve, type Handler } from './rpc.js';

/** Queue group every endpoint joins, so several coordinators share the load (micro's default name). */
export const SERVICE_QUEUE = 'q';

export interface EndpointStats {
  name: string;
  subject: string;
  queue_group: string;
  num_requests: number;
  num_errors: number;
  last_error: string;
  processing_time: number;
  average_processing_time: number;
}

export interface ServiceInfo {
  name: string;
  version: string;
  description: string;
}

export interface Service {
  id: string;
  stop(): void;
}

export interface ServiceBuilder {
  /** Adds an endpoint; its handler gets decoded requests, its replies are encoded. */
  endpoint<Req, Res>(name: string, subject: string, req: Codec<Req>, res: Codec<Res>, handler: Handler<Req, Res>): ServiceBuilder;
  start(): Service;
}

/** Builds a micro service on a connection. */
export function createService(nc: NatsConnection, info: ServiceInfo, onError?: (subject: string, err: unknown) => void): ServiceBuilder {
  const id = nuid.next();
  const started = new Date().toISOString();
  const endpoints: Array<{ stats: EndpointStats; start: () => Subscription }> = [];
  const builder: ServiceBuilder = {
    endpoint(name, subject, req, res, handler) {
      const stats: EndpointStats = {
        name, subject, queue_group: SERVICE_QUEUE, num_requests: 0, num_errors: 0, last_error: '',
        processing_time: 0, average_processing_time: 0,
      };
      const timed: typeof handler = async (r, msg) => {
        const t0 = process.hrtime.bigint();
        stats.num_requests++;
        try {
          return await handler(r, msg);
        } catch (e) {
          stats.num_errors++;
          stats.last_error = (e as Error).message ?? String(e);
          throw e;
        } finally {
          stats.processing_time += Number(process.hrtime.bigint() - t0);
          stats.average_processing_time = Math.round(stats.processing_time / stats.num_requests);
        }
      };
      endpoints.push({
        stats,
        start: () => serve(nc, subject, req, res, timed, { queue: SERVICE_QUEUE, ...(onError ? { onError } : {}) }),
      });
      return builder;
    },
    start() {
      const subs = endpoints.map((e) => e.start());
      const base = { name: info.name, id, version: info.version, metadata: {} };
      const reply = (type: string, extra: Record<string, unknown>) => JSON.stringify({ type, ...base, ...extra });
      const discovery = (verb: string, body: () => string) => {
        for (const s of [`$SRV.${verb}`, `$SRV.${verb}.${info.name}`, `$SRV.${verb}.${info.name}.${id}`]) {
          subs.push(nc.subscribe(s, { callback: (_e, m) => void m.respond(body()) }));
        }
      };
      discovery('PING', () => reply('io.nats.micro.v1.ping_response', {}));
      discovery('INFO', () => reply('io.nats.micro.v1.info_response', {
        description: info.description,
        endpoints: endpoints.map((e) => ({ name: e.stats.name, subject: e.stats.subject, queue_group: SERVICE_QUEUE, metadata: {} })),
      }));
      discovery('STATS', () => reply('io.nats.micro.v1.stats_response', { started, endpoints: endpoints.map((e) => e.stats) }));
      return { id, stop: () => subs.forEach((s) => s.unsubscribe()) };
    },
  };
  return builder;
}

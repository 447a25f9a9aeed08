/**
 * Request/reply over NATS with typed, validated messages. A reply is either the response body or,
 * with the error header set, a wire error that the caller rebuilds into its PodMotion error class.
 * A responder never lets a bad message or a failing handler take its process down.
 */
import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { createCodec, type Codec } from './codec.js';
import { DecodeError, TimeoutError, fromWire, toWire, NotFoundError, type WireError } from './errors.js';
import { Headers } from './subjects.js';
import { WireErrorSchema } from './messages.js';

/** Default bound on a request: node operations that take longer report progress separately. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** Requests queued behind maxInFlight at most; beyond that a responder answers busy rather than queue forever. */
const MAX_WAITING = 1_000;

export const wireErrorCodec: Codec<WireError> = createCodec(WireErrorSchema, 'error reply');

export interface RequestOptions {
  timeoutMs?: number;
}

/** Sends a request and returns the decoded reply; a remote error is rethrown as its own class. */
export async function request<Req, Res>(
  nc: NatsConnection,
  subject: string,
  reqCodec: Codec<Req>,
  resCodec: Codec<Res>,
  body: Req,
  opts: RequestOptions = {},
): Promise<Res> {
  const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  let reply: Msg;
  try {
    reply = await nc.request(subject, reqCodec.encode(body), { timeout: timeoutMs });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (/no responders/i.test(msg) || (e as Error).name === 'NoRespondersError') {
      throw new NotFoundError(`nobody answers on ${subject}`, { cause: e, retryable: true });
    }
    if (/timeout/i.test(msg)) throw new TimeoutError(`no reply on ${subject} within ${timeoutMs} ms`, { cause: e });
    throw e;
  }
  if (reply.headers?.get(Headers.error)) throw fromWire(wireErrorCodec.decode(reply.data));
  return resCodec.decode(reply.data);
}

/** Replies with an error; used by responders and by anything answering a request it cannot serve. */
export function replyError(msg: Msg, err: unknown): void {
  const h = headers();
  h.set(Headers.error, '1');
  msg.respond(wireErrorCodec.encode(toWire(err)), { headers: h });
}

export type Handler<Req, Res> = (req: Req, msg: Msg) => Promise<Res>;

export interface ServeOptions {
  /** Called for every request that failed (decode or handler), for logging. Never throws. */
  onError?: (subject: string, err: unknown) => void;
  /** Upper bound on requests handled at once; further ones wait in NATS's queue. */
  maxInFlight?: number;
  /** Queue group: several responders share the subject, each request goes to one. */
  queue?: string;
}

/**
 * Serves one subject. Each request is decoded and validated; a malformed one gets a DECODE error
 * reply, a failing handler an error reply of its class. Returns the subscription (drain to stop).
 */
export function serve<Req, Res>(
  nc: NatsConnection,
  subject: string,
  reqCodec: Codec<Req>,
  resCodec: Codec<Res>,
  handler: Handler<Req, Res>,
  opts: ServeOptions = {},
): Subscription {
  const maxInFlight = opts.maxInFlight ?? 16;
  let inFlight = 0;
  const waiting: Array<() => void> = [];
  const sub = nc.subscribe(subject, {
    ...(opts.queue ? { queue: opts.queue } : {}),
    callback: (err, msg) => {
      if (err) return opts.onError?.(subject, err);
      // Callbacks never await: the work runs detached, bounded by maxInFlight.
      void handleOne(msg);
    },
  });
  async function handleOne(msg: Msg): Promise<void> {
    if (inFlight >= maxInFlight) {
      if (waiting.length >= MAX_WAITING) {
        if (msg.reply) replyError(msg, new TimeoutError(`${msg.subject}: too many requests waiting, try again`));
        return;
      }
      await new Promise<void>((r) => waiting.push(r));
    }
    inFlight++;
    try {
      let req: Req;
      try {
        req = reqCodec.decode(msg.data);
      } catch (e) {
        const err = e instanceof DecodeError ? e : new DecodeError(`message on ${msg.subject} does not decode`, { cause: e });
        opts.onError?.(msg.subject, err);
        if (msg.reply) replyError(msg, err);
        return;
      }
      try {
        const res = await handler(req, msg);
        if (msg.reply) msg.respond(resCodec.encode(res));
      } catch (e) {
        opts.onError?.(msg.subject, e);
        if (msg.reply) replyError(msg, e);
      }
    } catch (e) {
      opts.onError?.(msg.subject, e);
    } finally {
      inFlight--;
      waiting.shift()?.();
    }
  }
  return sub;
}

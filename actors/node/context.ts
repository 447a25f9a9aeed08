/** What every node-side actor gets: where it runs, the bus, time, logging and the traffic hold. */
import type { NatsConnection } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { Clock } from '../../common/clock.js';
import type { OverlayMember } from '../../node-runtime/plan.js';
import type { HoldOps } from './hold.js';

export interface NodeContext {
  cluster: string;
  node: OverlayMember;
  nc: NatsConnection;
  clock: Clock;
  log: Logger;
  hold: HoldOps;
  /** Address this node's agent accepts image streams on (the node's own address; loopback locally). */
  dataHost: string;
}

/**
 * The node agent: one per node, connected to the bus. It registers the node (a heartbeat carrying
 * its capabilities into the nodes KV bucket), answers pings, and runs, lists and deletes the node's pods.
 */
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { Kvm, type KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { Clock } from '../common/clock.js';
import { createCodec } from '../bus/codec.js';
import { serve } from '../bus/rpc.js';
import { Buckets, HEARTBEAT_INTERVAL_MS, Subjects } from '../bus/subjects.js';
import {
  Empty, NodeInfo, NodeRegistration, PingReply, PingRequest, PodInfo, PodList, PodLogs, PodLogsRequest, PodRef,
  PodRunRequest, type Capabilities,
} from '../bus/messages.js';
import { NotFoundError } from '../bus/errors.js';
import type { OverlayMember } from './plan.js';
import { deletePod, podLogs, runPod } from './pods.js';
import { listPodRecords, readPodRecord, type PodRecord } from './records.js';
import { isAlive } from './procs.js';

export const codecs = {
  ping: createCodec(PingRequest, 'ping request'),
  pong: createCodec(PingReply, 'ping reply'),
  empty: createCodec(Empty, 'empty message'),
  info: createCodec(NodeInfo, 'node info'),
  registration: createCodec(NodeRegistration, 'node registration'),
  podRun: createCodec(PodRunRequest, 'pod run request'),
  podRef: createCodec(PodRef, 'pod reference'),
  podInfo: createCodec(PodInfo, 'pod info'),
  podList: createCodec(PodList, 'pod list'),
  podLogsReq: createCodec(PodLogsRequest, 'pod logs request'),
  podLogs: createCodec(PodLogs, 'pod logs'),
} as const;

export interface AgentConfig {
  cluster: string;
  node: OverlayMember;
  nc: NatsConnection;
  clock: Clock;
  log: Logger;
  capabilities: Capabilities;
  /** Called after a pod started / before its deletion (the node actors keep a traffic hold on every pod). */
  podHooks?: { started(rec: PodRecord): Promise<void>; deleting(rec: PodRecord): Promise<void> };
}

export interface Agent {
  stop(): Promise<void>;
}

export async function podInfo(rec: PodRecord): Promise<PodInfo> {
  return {
    name: rec.name, node: rec.node, ip: rec.ip, mac: rec.mac, command: rec.command, ...(rec.containers ? { containers: rec.containers } : {}), initPid: rec.init.pid,
    running: await isAlive(rec.init), startedAtMs: rec.startedAtMs, ...(rec.port !== undefined ? { port: rec.port } : {}),
    ...(rec.user !== undefined ? { user: rec.user } : {}), ...(rec.volumes?.length ? { volumes: rec.volumes } : {}),
  };
}

/** Pods this node runs, from the records its runtime keeps. */
async function localPods(cfg: AgentConfig): Promise<PodRecord[]> {
  return (await listPodRecords(cfg.cluster)).filter((p) => p.node === cfg.node.name && p.incoming === undefined);
}

async function ownPod(cfg: AgentConfig, name: string): Promise<PodRecord> {
  const rec = await readPodRecord(cfg.cluster, cfg.node.name, name);
  if (!rec || rec.incoming !== undefined) throw new NotFoundError(`pod ${name} is not on ${cfg.node.name}`);
  return rec;
}

/** Starts the agent: registration heartbeat plus the node's request handlers. */
export async function startAgent(cfg: AgentConfig): Promise<Agent> {
  const { nc, node, clock, log } = cfg;
  const startedAtMs = clock.nowMs();
  const kv: KV = await new Kvm(nc).open(Buckets.nodes);
  const registration = (): NodeRegistration => ({
    node: node.name, cluster: cfg.cluster, agentPid: process.pid, startedAtMs, heartbeatAtMs: clock.nowMs(),
    podCidr: node.podCidr, capabilities: cfg.capabilities,
  });
  // Pod starts run one at a time: names and addresses are allocated from the records, which a
  // concurrent start would not see yet.
  let runs: Promise<unknown> = Promise.resolve();
  const serializeRuns = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = runs.then(fn, fn);
    runs = next.catch(() => {});
    return next;
  };
  const onError = (subject: string, err: unknown) => log.warn({ subject, err: (err as Error).message }, 'request failed');
  const subs: Subscription[] = [
    serve(nc, Subjects.node(node.name, 'ping'), codecs.ping, codecs.pong, async () => ({
      node: node.name, pid: process.pid, receivedAtMs: clock.nowMs(),
    }), { onError }),
    serve(nc, Subjects.node(node.name, 'info'), codecs.empty, codecs.info, async () => ({
      registration: registration(), pods: (await localPods(cfg)).length,
    }), { onError }),
    serve(nc, Subjects.node(node.name, 'pod.run'), codecs.podRun, codecs.podInfo, (req) => serializeRuns(async () => {
      const rec = await runPod(cfg.cluster, node, {
        name: req.name, command: req.command, ...(req.containers?.length ? { containers: req.containers } : {}), ...(req.port !== undefined ? { port: req.port } : {}),
        ...(req.user !== undefined ? { user: req.user } : {}), ...(req.volumes !== undefined ? { volumes: req.volumes } : {}),
      });
      await cfg.podHooks?.started(rec).catch((e: Error) => log.warn({ pod: rec.name, err: e.message }, 'pod start hook failed'));
      log.info({ pod: rec.name, ip: rec.ip, pid: rec.init.pid }, 'pod started');
      return podInfo(rec);
    }), { onError }),
    serve(nc, Subjects.node(node.name, 'pod.delete'), codecs.podRef, codecs.podInfo, async (req) => {
      const rec = await ownPod(cfg, req.name);
      const info = await podInfo(rec);
      await cfg.podHooks?.deleting(rec).catch((e: Error) => log.warn({ pod: rec.name, err: e.message }, 'pod delete hook failed'));
      await deletePod(cfg.cluster, node.name, req.name, { keepVolumes: req.keepVolumes === true });
      log.info({ pod: req.name }, 'pod deleted');
      return { ...info, running: false };
    }, { onError }),
    serve(nc, Subjects.node(node.name, 'pod.list'), codecs.empty, codecs.podList, async () => ({
      pods: await Promise.all((await localPods(cfg)).map(podInfo)),
    }), { onError }),
    serve(nc, Subjects.node(node.name, 'pod.logs'), codecs.podLogsReq, codecs.podLogs, async (req) => {
      await ownPod(cfg, req.name);
      return { name: req.name, lines: await podLogs(cfg.cluster, node.name, req.name, req.lines ?? 200) };
    }, { onError }),
  ];
  let stopped = false;
  let cancelTimer: () => void = () => {};
  const beat = async () => {
    if (stopped) return;
    try {
      await kv.put(node.name, codecs.registration.encode(registration()));
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'heartbeat failed');
    }
    if (!stopped) cancelTimer = clock.setTimer(() => void beat(), HEARTBEAT_INTERVAL_MS);
  };
  await beat();
  log.info({ criu: cfg.capabilities.criuVersion, criuOk: cfg.capabilities.criuOk }, 'agent registered');
  return {
    async stop() {
      stopped = true;
      cancelTimer();
      for (const s of subs) s.unsubscribe();
      await kv.delete(node.name).catch(() => {});
      log.info('agent stopped');
    },
  };
}

/**
 * The network-relay actor on each node: routes a pod IP to the node that serves it (the serving node to the
 * pod's veth, every other node to the serving node's VTEP over the overlay), and moves the conntrack entries
 * of a migrating pod's flows from the node it leaves to the node it goes to.
 */
import { MAX_CT_ENTRIES, type ConntrackReply, type ConntrackRequest, type Done, type FreezeReply, type RouteRequest } from '../../bus/node-migration.js';
import { carriable, forgetEntries, insertEntries, listEntries } from '../../node-runtime/conntrack.js';
import { POD_GATEWAY, VXLAN_DEV } from '../../node-runtime/constants.js';
import { listPodRecords, readPodRecord } from '../../node-runtime/records.js';
import { InvalidRequestError } from '../../bus/errors.js';
import { peekMigration } from './state.js';
import { ip } from '../../node-runtime/exec.js';
import { podHostIface } from '../../node-runtime/plan.js';
import type { NodeContext } from './context.js';

/** Newest route version applied per pod IP (in memory: after a restart the coordinator sends them all again). */
const versions = new Map<string, number>();

/** `ip route replace` is idempotent, so a repeated handoff (resume, rollback) is harmless. */
export async function route(ctx: NodeContext, req: RouteRequest): Promise<Done> {
  const known = versions.get(req.podIp);
  if (req.version !== undefined && known !== undefined && req.version < known) {
    return { done: true, note: `${req.podIp}: a newer route (version ${known}) is in place` };
  }
  if (req.version !== undefined) versions.set(req.podIp, req.version);
  const args = req.node === ctx.node.name
    ? ['route', 'replace', `${req.podIp}/32`, 'dev', podHostIface(req.pod)]
    : ['route', 'replace', `${req.podIp}/32`, 'via', req.vtepIp, 'dev', VXLAN_DEV, 'onlink'];
  await ip(args, ctx.node.netns);
  return { done: true, note: `${req.podIp} via ${req.node === ctx.node.name ? 'local veth' : req.node}` };
}

/** The same route in a namespace that is an overlay member but not a node (the local cluster's client). */
export async function routeMember(netns: string, podIp: string, vtepIp: string): Promise<void> {
  await ip(['route', 'replace', `${podIp}/32`, 'via', vtepIp, 'dev', VXLAN_DEV, 'onlink'], netns);
}

/** Addresses of pods on this node (also copies arriving): their flows through here stay here. */
async function localPeers(ctx: NodeContext): Promise<Set<string>> {
  const recs = await listPodRecords(ctx.cluster);
  return new Set(recs.filter((r) => r.node === ctx.node.name).map((r) => r.ip));
}

/**
 * With the pod frozen (no flow opens after): this node's conntrack entries of the pod's flows that can move with
 * it, and how many cannot, as freeze-reply fields. A node that tracks nothing (no stateful rules) has none; a
 * failure to list is logged and carries none.
 */
export async function flowsToCarry(ctx: NodeContext, podIp: string): Promise<Pick<FreezeReply, 'conntrack' | 'conntrackLeft'>> {
  try {
    const all = await listEntries(ctx.node.netns, podIp);
    const { carry, stuck } = carriable(all, podIp, new Set([ctx.node.underlayIp, ctx.node.vtepIp, POD_GATEWAY]));
    const entries = carry.slice(0, MAX_CT_ENTRIES);
    const left = carry.length - entries.length + stuck.length;
    return { ...(entries.length ? { conntrack: entries } : {}), ...(left ? { conntrackLeft: left } : {}) };
  } catch (e) {
    ctx.log.warn({ podIp, err: (e as Error).message }, 'conntrack entries of the pod could not be listed; none carried');
    return {};
  }
}

/**
 * OverlayHandoff on the destination (or a move back on the source): the other node's entries of the pod's
 * flows, in place before it resumes here. `forget`: the node hands the flows over instead, and forgets them.
 * Only entries with this migration's pod at an end are taken: another pod's flows are not the sender's to set.
 */
export async function takeFlows(ctx: NodeContext, req: ConntrackRequest): Promise<ConntrackReply> {
  const t0 = ctx.clock.nowMs();
  const podIp = peekMigration(req.id)?.address?.ip ?? (await readPodRecord(ctx.cluster, ctx.node.name, req.pod))?.ip;
  if (podIp !== req.podIp) throw new InvalidRequestError(`migration ${req.id}: pod ${req.pod} is not ${req.podIp} on ${ctx.node.name}`);
  if (req.forget) {
    const forgotten = await forgetFlows(ctx, podIp);
    return { inserted: 0, forgotten, ms: ctx.clock.nowMs() - t0 };
  }
  const entries = req.entries.filter((e) => e.orig.src === podIp || e.orig.dst === podIp);
  if (entries.length < req.entries.length) ctx.log.warn({ migration: req.id, refused: req.entries.length - entries.length }, 'conntrack entries without the pod at an end refused');
  const { retried } = await insertEntries(ctx.node.netns, podIp, entries);
  ctx.log.info({ migration: req.id, pod: req.pod, entries: entries.length, ...(retried ? { retriedAfter: retried } : {}) }, 'conntrack entries of the pod taken over');
  return { inserted: entries.length, ms: ctx.clock.nowMs() - t0 };
}

/**
 * This node no longer serves the pod (the source at cutover, a destination rolled back, a destination before
 * it takes the pod's flows): it forgets their entries, which an earlier stay would otherwise leave behind with
 * sequence windows that make every later packet INVALID. Best effort: logged, never fatal.
 */
export async function forgetFlows(ctx: NodeContext, podIp: string): Promise<number> {
  try {
    return await forgetEntries(ctx.node.netns, podIp, await localPeers(ctx));
  } catch (e) {
    ctx.log.warn({ podIp, err: (e as Error).message }, 'conntrack entries of the pod could not be removed');
    return 0;
  }
}

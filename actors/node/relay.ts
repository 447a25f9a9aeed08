/**
 * The network-relay actor on each node: routes a pod IP to the node that serves it. The serving node
 * routes it to the pod's veth; every other node to the serving node's VTEP over the overlay.
 */
import type { Done, RouteRequest } from '../../bus/node-migration.js';
import { VXLAN_DEV } from '../../node-runtime/constants.js';
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

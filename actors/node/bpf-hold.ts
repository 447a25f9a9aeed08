/** The node actors' traffic hold, on the eBPF programs of bpf/ (tc on each pod's node-side veth). */
import { attachHold, detachHold, holdStats, reopen, setHoldMode, waitQuiesced } from '../../bpf/index.js';
import type { HoldOps } from './hold.js';

export const bpfHold: HoldOps = {
  async attach(o) {
    await attachHold({ netns: o.nodeNetns, dev: o.dev, podIp: o.podIp, pin: o.pin });
    if (o.modes.length > 0) await setHoldMode(o.pin, o.modes);
  },
  async setModes(pin, modes) {
    await setHoldMode(pin, modes);
  },
  async quiesce(pin, timeoutMs, netns) {
    // The kick makes idle peers see window 0 and answer at once, instead of after their delayed ACK.
    const r = await waitQuiesced(pin, { timeoutMs, kickNetns: netns.kickNetns, elicitNetns: netns.podNetns });
    return { settled: r.settled, waitedMs: r.waitedMs };
  },
  async counters(pin) {
    try {
      const s = await holdStats(pin);
      const c = s.counters;
      return { rstToPod: c.rstToPod, rstFromPod: c.rstFromPod, droppedToPod: c.droppedToPod, droppedFromPod: c.droppedFromPod };
    } catch {
      return undefined;
    }
  },
  async resets(pin) {
    try {
      const s = await holdStats(pin);
      return new Set(s.flows.filter((f) => f.toPod.rst || f.fromPod.rst).map((f) => `${f.pod}|${f.peer}`));
    } catch {
      return undefined;
    }
  },
  async reopen(o) {
    return (await reopen({ netns: o.netns, pin: o.flowsPin })).sent;
  },
  async detach(o) {
    await detachHold({ netns: o.nodeNetns, dev: o.dev, pin: o.pin });
  },
};

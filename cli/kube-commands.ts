/**
 * `kubectl podmotion migrate|status|describe|cancel|list`: the same verbs as `podmotion`, through the
 * Kubernetes API. migrate creates a PodMigration and streams its phases until it ends; status, describe
 * and cancel read and update PodMigration objects. Flags follow kubectl: --kubeconfig, --context,
 * -n/--namespace, -A/--all-namespaces.
 */
import { API_VERSION, isTerminalPhase, type Condition, type PodMigration, type PodMigrationSpec } from '../k8s/api.js';
import { Kube, KubeError, loadKubeConfig } from '../k8s/client.js';
import { checkName, intOption, parse, requirePositional, type Options, type Parsed } from './args.js';
import { printJson, printTable, UsageError } from './output.js';

export const KUBE_VERBS = ['migrate', 'status', 'describe', 'cancel', 'list'] as const;

export const KUBECTL_USAGE = `usage: kubectl podmotion <command> [flags]

  migrate POD [--to-node N | --node-selector K=V ...] [--strategy PreCopy|PostCopy|Cold] [--bandwidth-mbps M]
          [--allow-post-copy] [--dry-run] [--no-network-continuity] [--name NAME] [--no-wait] [--timeout S]
                         create a PodMigration and stream its phases until it ends
  status MIGRATION       phase, nodes, freeze window, connections and a condition checklist
  describe MIGRATION     the full spec, status and every condition with its time
  cancel MIGRATION       cancel it: before Cutover the pod rolls back and keeps running where it was
  list [-A]              PodMigrations in the namespace (or all)
  estimate POD           (through the bus, as podmotion estimate)

flags: --kubeconfig FILE, --context NAME, -n/--namespace NS, --json
`;

const KUBE_FLAGS: Options = {
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  'all-namespaces': { type: 'boolean', short: 'A' },
};

const POLL_MS = 250;

function connect(p: Parsed): { kube: Kube; ns: string } {
  const kubeconfig = p.values['kubeconfig'] as string | undefined;
  const context = p.values['context'] as string | undefined;
  const kube = new Kube(loadKubeConfig({ ...(kubeconfig ? { kubeconfig } : {}), ...(context ? { context } : {}) }));
  return { kube, ns: (p.values['namespace'] as string | undefined) ?? kube.defaultNamespace() };
}

const mark = (c: Condition) => (c.status === 'True' ? '✓' : c.status === 'False' ? '✗' : '…');

function phaseLine(c: Condition): string {
  return `${mark(c)} ${c.type.padEnd(18)} ${c.message}`;
}

export async function kubeCommand(verb: (typeof KUBE_VERBS)[number], argv: string[]): Promise<number> {
  switch (verb) {
    case 'migrate': return migrate(argv);
    case 'status': return status(argv, false);
    case 'describe': return status(argv, true);
    case 'cancel': return cancel(argv);
    case 'list': return list(argv);
  }
}

async function migrate(argv: string[]): Promise<number> {
  const p = parse(argv, {
    ...KUBE_FLAGS, 'to-node': { type: 'string' }, 'node-selector': { type: 'string', multiple: true }, strategy: { type: 'string' },
    'bandwidth-mbps': { type: 'string' }, 'allow-post-copy': { type: 'boolean' }, 'dry-run': { type: 'boolean' },
    'no-network-continuity': { type: 'boolean' }, name: { type: 'string' }, 'no-wait': { type: 'boolean' }, timeout: { type: 'string' },
  });
  const pod = checkName('pod', requirePositional(p, 0, 'pod name (kubectl podmotion migrate POD --to-node NODE)'));
  const strategy = p.values['strategy'] as string | undefined;
  if (strategy !== undefined && !['PreCopy', 'PostCopy', 'Cold'].includes(strategy)) throw new UsageError(`--strategy must be PreCopy, PostCopy or Cold (got ${strategy})`);
  const toNode = p.values['to-node'] as string | undefined;
  const selectors = (p.values['node-selector'] as unknown as string[] | undefined) ?? [];
  if (toNode && selectors.length) throw new UsageError('give --to-node or --node-selector, not both');
  const nodeSelector: Record<string, string> = {};
  for (const s of selectors) {
    const [k, v, ...more] = s.split('=');
    if (!k || v === undefined || more.length) throw new UsageError(`--node-selector takes KEY=VALUE (got ${s})`);
    nodeSelector[k] = v;
  }
  const timeoutS = intOption(p, 'timeout', 600, 1, 86_400);
  const spec: PodMigrationSpec = {
    pod,
    ...(toNode ? { destination: { node: checkName('node', toNode) } } : selectors.length ? { destination: { nodeSelector } } : {}),
    ...(strategy ? { strategy: strategy as PodMigrationSpec['strategy'] } : {}),
    ...(p.values['bandwidth-mbps'] !== undefined ? { bandwidthMbps: intOption(p, 'bandwidth-mbps', 0, 1, 1_000_000) } : {}),
    ...(p.values['allow-post-copy'] ? { allowPostCopy: true } : {}),
    ...(p.values['dry-run'] ? { dryRun: true } : {}),
    ...(p.values['no-network-continuity'] ? { networkContinuity: false } : {}),
  };
  const { kube, ns } = connect(p);
  const name = p.values['name'] as string | undefined;
  const created = await kube.create<PodMigration>('PodMigration', {
    apiVersion: API_VERSION, kind: 'PodMigration', metadata: name ? { name, namespace: ns } : { generateName: `${pod}-`, namespace: ns }, spec,
  }, ns);
  const created_ = created.metadata.name!;
  const json = p.values['json'] === true;
  if (!json) process.stdout.write(`podmigration.podmotion.io/${created_} created\n`);
  if (p.values['no-wait']) {
    if (json) printJson(created);
    return 0;
  }
  const deadline = Date.now() + timeoutS * 1000;
  const shown = new Map<string, string>();
  let last: PodMigration = created;
  for (;;) {
    last = await kube.get<PodMigration>('PodMigration', created_, ns);
    for (const c of last.status?.conditions ?? []) {
      const seen = `${c.status} ${c.message}`;
      if (shown.get(c.type) === seen || (c.status === 'Unknown' && shown.has(c.type))) continue;
      shown.set(c.type, seen);
      if (!json) process.stdout.write(`${phaseLine(c)}\n`);
    }
    if (isTerminalPhase(last.status?.phase)) break;
    if (Date.now() > deadline) {
      throw new KubeError(`podmigration ${created_} did not end within ${timeoutS} s (phase ${last.status?.phase ?? 'not started'}); it goes on: kubectl podmotion status ${created_}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const st = last.status!;
  if (json) printJson(last);
  else if (st.phase === 'Complete') {
    const conn = st.connections;
    process.stdout.write(`✓ Migration complete · Pod running on: ${st.destinationNode} · freeze ${st.freezeWindowMs ?? '?'} ms`
      + (conn ? ` · ${conn.preserved}/${conn.total} connections kept, seq_delta=${conn.seqDeltaMax}, ${conn.rst} RST` : '') + '\n');
  } else {
    process.stdout.write(`${st.phase === 'Validated' ? '✓' : '✗'} ${st.phase}${st.message ? `: ${st.message}` : ''}\n`);
  }
  return st.phase === 'Complete' || st.phase === 'Validated' ? 0 : 1;
}

async function status(argv: string[], full: boolean): Promise<number> {
  const p = parse(argv, KUBE_FLAGS);
  const name = requirePositional(p, 0, `PodMigration name (kubectl podmotion ${full ? 'describe' : 'status'} NAME)`);
  const { kube, ns } = connect(p);
  const pm = await kube.get<PodMigration>('PodMigration', name, ns);
  if (p.values['json']) {
    printJson(full ? pm : { name, namespace: ns, ...pm.status });
    return 0;
  }
  const st = pm.status ?? {};
  const out: string[] = [];
  if (full) {
    out.push(`Name:         ${pm.metadata.name}`, `Namespace:    ${pm.metadata.namespace}`, `Created:      ${pm.metadata.creationTimestamp}`,
      `Generation:   ${pm.metadata.generation}`, `Finalizers:   ${(pm.metadata.finalizers ?? []).join(', ') || '-'}`, 'Spec:');
    for (const [k, v] of Object.entries(pm.spec ?? {})) out.push(`  ${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    out.push('Status:');
    for (const [k, v] of Object.entries(st)) if (k !== 'conditions') out.push(`  ${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    out.push('Conditions:', `  ${'TYPE'.padEnd(20)}${'STATUS'.padEnd(9)}${'REASON'.padEnd(24)}${'LAST TRANSITION'.padEnd(26)}MESSAGE`);
    for (const c of st.conditions ?? []) out.push(`  ${c.type.padEnd(20)}${c.status.padEnd(9)}${c.reason.padEnd(24)}${c.lastTransitionTime.padEnd(26)}${c.message}`);
  } else {
    out.push(`${pm.metadata.name}: ${st.phase ?? 'not started'} · pod ${pm.spec?.pod} · ${st.sourceNode ?? '?'} → ${st.destinationNode ?? '?'} · ${st.strategy ?? pm.spec?.strategy ?? '?'}`);
    if (st.migrationId) out.push(`migration ${st.migrationId}`);
    if (st.preCopy) out.push(`pre-copy: ${st.preCopy.rounds} rounds, ${st.preCopy.dataProcessedBytes} bytes sent, ${st.preCopy.dataRemainingBytes} remaining, dirty ${st.preCopy.dirtyMemoryRateBytes} B/s`);
    if (st.freezeWindowMs !== undefined) out.push(`freeze window: ${st.freezeWindowMs} ms`);
    if (st.connections) out.push(`connections: ${st.connections.preserved}/${st.connections.total} kept · seq_delta=${st.connections.seqDeltaMax} · ${st.connections.rst === 0 ? 'No RST' : `${st.connections.rst} RST`}`);
    if (st.message) out.push(`message: ${st.message}`);
    for (const c of st.conditions ?? []) out.push(phaseLine(c));
  }
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

async function cancel(argv: string[]): Promise<number> {
  const p = parse(argv, KUBE_FLAGS);
  const name = requirePositional(p, 0, 'PodMigration name (kubectl podmotion cancel NAME)');
  const { kube, ns } = connect(p);
  const pm = await kube.get<PodMigration>('PodMigration', name, ns);
  const phase = pm.status?.phase;
  if (isTerminalPhase(phase)) {
    const msg = `podmigration ${name} already ended: ${phase}; nothing to cancel`;
    if (p.values['json']) printJson({ name, namespace: ns, accepted: false, phase, message: msg });
    else process.stderr.write(`${msg}\n`);
    return 1;
  }
  const after = await kube.patch<PodMigration>('PodMigration', name, { spec: { cancel: true } }, ns);
  const msg = phase === undefined || phase === 'Pending' ? 'cancelled before it started' : 'cancelled — rollback initiated';
  if (p.values['json']) printJson({ name, namespace: ns, accepted: true, phase: after.status?.phase ?? phase, message: msg });
  else process.stdout.write(`podmigration.podmotion.io/${name} ${msg}\n`);
  return 0;
}

async function list(argv: string[]): Promise<number> {
  const p = parse(argv, KUBE_FLAGS);
  const { kube, ns } = connect(p);
  const all = p.values['all-namespaces'] === true;
  const { items } = await kube.list<PodMigration>('PodMigration', all ? undefined : ns);
  if (p.values['json']) {
    printJson(items.map((o) => ({ name: o.metadata.name, namespace: o.metadata.namespace, pod: o.spec?.pod, ...o.status, conditions: undefined })));
    return 0;
  }
  printTable([...(all ? ['NAMESPACE'] : []), 'NAME', 'POD', 'FROM', 'TO', 'STRATEGY', 'PHASE', 'FREEZE-MS'],
    items.map((o) => [...(all ? [o.metadata.namespace] : []), o.metadata.name, o.spec?.pod, o.status?.sourceNode, o.status?.destinationNode,
      o.status?.strategy ?? o.spec?.strategy, o.status?.phase ?? 'not started', o.status?.freezeWindowMs]));
  return 0;
}

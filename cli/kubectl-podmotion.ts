#!/usr/bin/env node
// `kubectl podmotion VERB ...`: kubectl runs kubectl-podmotion from PATH with the words after "podmotion".
// migrate, status, describe, cancel and list go through the Kubernetes API (PodMigration objects); the
// other verbs (estimate, ...) are podmotion's own, over the bus.
import { KUBECTL_USAGE, KUBE_VERBS, kubeCommand } from './kube-commands.js';
import { main } from './main.js';
import { exitCodeFor, printError } from './output.js';

const [verb, ...rest] = process.argv.slice(2);
if (verb === undefined || verb === 'help' || verb === '--help' || verb === '-h') {
  process.stdout.write(KUBECTL_USAGE);
  process.exitCode = verb === undefined ? 2 : 0;
} else if ((KUBE_VERBS as readonly string[]).includes(verb)) {
  try {
    process.exitCode = await kubeCommand(verb as (typeof KUBE_VERBS)[number], rest);
  } catch (e) {
    printError(e, rest.includes('--json'));
    process.exitCode = exitCodeFor(e);
  }
} else {
  process.exitCode = await main(process.argv.slice(2));
}

/** Following a migration's phase events from the JetStream stream, from its first event on. */
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream } from '@nats-io/jetstream';
import { Streams, Subjects } from '../bus/subjects.js';
import { TimeoutError } from '../bus/errors.js';
import { apiCodecs } from '../actors/coordinator/codecs.js';
import { isTerminal, type MigrationStatus } from '../machines/index.js';
import type { ProgressEvent } from '../bus/api.js';

/**
 * Calls onStatus for every phase event of the migration until it reaches a terminal phase (resolves
 * with that status) or timeoutMs passes (TimeoutError). Replays earlier events first, so nothing is missed.
 */
export async function followMigration(nc: NatsConnection, id: string, timeoutMs: number, onStatus: (s: MigrationStatus) => void,
  onProgress?: (p: ProgressEvent) => void): Promise<MigrationStatus> {
  const js = jetstream(nc);
  const consumer = await js.consumers.get(Streams.events.name, { filter_subjects: Subjects.migrationAll(id) });
  const messages = await consumer.consume();
  const timer = setTimeout(() => void messages.close(), timeoutMs);
  let last: MigrationStatus | undefined;
  try {
    for await (const m of messages) {
      if (m.subject === Subjects.migrationProgress(id)) {
        onProgress?.(apiCodecs.progress.decode(m.data));
        continue;
      }
      const ev = apiCodecs.event.decode(m.data);
      last = ev.status as MigrationStatus;
      onStatus(last);
      if (isTerminal(last.phase)) return last;
    }
  } finally {
    clearTimeout(timer);
    await messages.close();
  }
  throw new TimeoutError(`migration ${id} did not finish within ${Math.round(timeoutMs / 1000)} s (last phase: ${last?.phase ?? 'unknown'}); it goes on: podmotion status ${id}`);
}

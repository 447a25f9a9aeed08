/** Migration records in the JetStream KV bucket: the coordinator's memory across restarts. */
import type { NatsConnection } from '@nats-io/nats-core';
import { Kvm, type KV } from '@nats-io/kv';
import { Buckets } from '../../bus/subjects.js';
import type { MigrationStatus } from '../../machines/index.js';
import { apiCodecs } from './codecs.js';

export interface StoredMigration {
  status: MigrationStatus;
  snapshot: unknown;
}

export class MigrationStore {
  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection): Promise<MigrationStore> {
    return new MigrationStore(await new Kvm(nc).open(Buckets.migrations));
  }

  async put(status: MigrationStatus, snapshot: unknown): Promise<void> {
    await this.kv.put(status.spec.id, apiCodecs.stored.encode({ status: status as never, snapshotJson: JSON.stringify(snapshot) }));
  }

  async get(id: string): Promise<StoredMigration | undefined> {
    const e = await this.kv.get(id);
    if (!e || e.operation !== 'PUT') return undefined;
    const rec = apiCodecs.stored.decode(e.value);
    return { status: rec.status as MigrationStatus, snapshot: JSON.parse(rec.snapshotJson) as unknown };
  }

  /** Every stored migration; a record that no longer decodes is reported and skipped, never fatal. */
  async all(onBad?: (key: string, err: unknown) => void): Promise<StoredMigration[]> {
    const out: StoredMigration[] = [];
    const keys = await this.kv.keys();
    for await (const k of keys) {
      try {
        const rec = await this.get(k);
        if (rec) out.push(rec);
      } catch (e) {
        onBad?.(k, e);
      }
    }
    return out;
  }
}

/**
 * Reads CRIU's pagemap images (images/pagemap.proto): after the u32 image magics, length-prefixed protobuf
 * records, a pagemap_head then one pagemap_entry per run of pages. Only the counts PodMotion reports are
 * decoded: pages per flag (PE_LAZY pages stay with the source until post-copy delivers them).
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { DecodeError } from '../../bus/errors.js';

export const PE_PARENT = 1;
export const PE_LAZY = 2;
export const PE_PRESENT = 4;
export const PAGE_BYTES = 4096;
const MAGICS_BYTES = 8;

function varint(buf: Buffer, pos: { at: number }): bigint {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos.at >= buf.length) throw new DecodeError('pagemap: truncated varint');
    const b = buf[pos.at++]!;
    v |= BigInt(b & 0x7f) << BigInt(7 * i);
    if ((b & 0x80) === 0) return v;
  }
  throw new DecodeError('pagemap: varint longer than 10 bytes');
}

export interface PagemapEntry {
  vaddr: bigint;
  pages: number;
  flags: number;
}

/** The entries of one pagemap image (the head record is skipped). */
export function parsePagemap(buf: Buffer): PagemapEntry[] {
  const out: PagemapEntry[] = [];
  let at = MAGICS_BYTES;
  let first = true;
  while (at < buf.length) {
    if (at + 4 > buf.length) throw new DecodeError('pagemap: truncated record length');
    const len = buf.readUInt32LE(at);
    at += 4;
    if (at + len > buf.length) throw new DecodeError('pagemap: truncated record');
    const rec = buf.subarray(at, at + len);
    at += len;
    if (first) {
      first = false;
      continue;
    }
    const e: PagemapEntry = { vaddr: 0n, pages: 0, flags: 0 };
    let compat = 0;
    const pos = { at: 0 };
    while (pos.at < rec.length) {
      const key = Number(varint(rec, pos));
      const field = key >> 3;
      if ((key & 7) !== 0) throw new DecodeError(`pagemap: field ${field} has wire type ${key & 7}`);
      const v = varint(rec, pos);
      if (field === 1) e.vaddr = v;
      else if (field === 2) compat = Number(v);
      else if (field === 4) e.flags = Number(v);
      else if (field === 5) e.pages = Number(v);
    }
    if (e.pages === 0) e.pages = compat;
    out.push(e);
  }
  return out;
}

/** Pages carrying `flag` over every task's pagemap in an images directory. */
export async function countPages(dir: string, flag: number): Promise<number> {
  let pages = 0;
  for (const f of await readdir(dir)) {
    if (!/^pagemap-\d+\.img$/.test(f)) continue;
    for (const e of parsePagemap(await readFile(path.join(dir, f)))) if (e.flags & flag) pages += e.pages;
  }
  return pages;
}

/**
 * A hand-written proto2 codec for the part of CRIU's RPC contract (images/rpc.proto, CRIU 4.2.1) that
 * PodMotion uses: requests are encoded, responses decoded. Field numbers below are copied from rpc.proto and
 * checked byte for byte against `protoc --encode` in test/unit/criu-proto.test.ts. Fields are written in
 * field-number order, as protoc does, so the bytes match exactly; unknown response fields are skipped.
 */
import { DecodeError, InvalidRequestError } from '../../bus/errors.js';

/** criu_req_type: what a request asks for; a response carries the type of the request it answers. */
export const CRIU_REQ_TYPES = {
  EMPTY: 0,
  DUMP: 1,
  RESTORE: 2,
  CHECK: 3,
  PRE_DUMP: 4,
  PAGE_SERVER: 5,
  NOTIFY: 6,
  CPUINFO_DUMP: 7,
  CPUINFO_CHECK: 8,
  FEATURE_CHECK: 9,
  VERSION: 10,
  WAIT_PID: 11,
  PAGE_SERVER_CHLD: 12,
  SINGLE_PRE_DUMP: 13,
} as const;
export type CriuReqType = keyof typeof CRIU_REQ_TYPES;

/** criu_network_lock_method. SKIP leaves traffic holding to the caller (see docs/criu-and-tcp.md). */
export const CRIU_NETWORK_LOCKS = { IPTABLES: 1, NFTABLES: 2, SKIP: 3 } as const;
export type CriuNetworkLock = keyof typeof CRIU_NETWORK_LOCKS;

/** criu_cg_mode. */
export const CRIU_CG_MODES = { IGNORE: 0, CG_NONE: 1, PROPS: 2, SOFT: 3, FULL: 4, STRICT: 5, DEFAULT: 6 } as const;
export type CriuCgMode = keyof typeof CRIU_CG_MODES;

/** inherit_fd: CRIU uses its own descriptor `fd` wherever the images name `key` (swrk mode only). */
export interface CriuInheritFd {
  key: string;
  fd: number;
}

/** criu_page_server_info. */
export interface CriuPageServerInfo {
  /** 1 */
  address?: string;
  /** 2 */
  port?: number;
  /** 4: a socket already connected, in CRIU's descriptor table. */
  fd?: number;
}

/** The criu_opts fields PodMotion sets; the comment on each is its field number in rpc.proto. */
export interface CriuOpts {
  /** 1, required: -1 (the default written when absent) means "use imagesDir". Resolved in the peer's fd table. */
  imagesDirFd?: number;
  /** 68: path of the images directory, used only when imagesDirFd is -1. */
  imagesDir?: string;
  /** 2: root of the tree to dump. Unset means the RPC peer itself: always set it. */
  pid?: number;
  /** 3 */
  leaveRunning?: boolean;
  /** 4 */
  extUnixSk?: boolean;
  /** 5 */
  tcpEstablished?: boolean;
  /** 7 */
  shellJob?: boolean;
  /** 8 */
  fileLocks?: boolean;
  /** 9: 0 messages only ... 4 debug; CRIU's default is 2. */
  logLevel?: number;
  /** 10: a file name inside the work dir (no '/'). */
  logFile?: string;
  /** 11: where pages go; PodMotion sets only `fd`, a connected socket for a lazy dump (patch 0002). */
  ps?: CriuPageServerInfo;
  /** 12: send NOTIFY for each action-script point and wait for the caller's answer. */
  notifyScripts?: boolean;
  /** 17: resolved like imagesDirFd, in the peer's fd table. */
  workDirFd?: number;
  /** 26, swrk only: make the restored root a child of the swrk's parent instead of CRIU. */
  rstSibling?: boolean;
  /** 27, swrk only */
  inheritFd?: readonly CriuInheritFd[];
  /** 34 */
  manageCgroupsMode?: CriuCgMode;
  /** 37: e.g. `net[<inode>]:<key>` */
  external?: readonly string[];
  /** 38: namespaces (CLONE_NEW* bits) to restore empty; only CLONE_NEWNET is accepted. */
  emptyNs?: number;
  /** 45: seconds CRIU waits to collect (seize) the tree. */
  timeout?: number;
  /** 46 */
  tcpSkipInFlight?: boolean;
  /** 48: dump: leave private anonymous memory to be served on `ps`; restore: fault it in from criu lazy-pages. */
  lazyPages?: boolean;
  /** 50 */
  orphanPtsMaster?: boolean;
  /** 51: a CRIU configuration file (one long option per line) for what this message has no field for. */
  configFile?: string;
  /** 52 */
  tcpClose?: boolean;
  /** 64: CRIU's default is IPTABLES. */
  networkLock?: CriuNetworkLock;
  /** 69 */
  leaveStopped?: boolean;
  /** 71 */
  logToStderr?: boolean;
}

export interface CriuReq {
  type: CriuReqType;
  opts?: CriuOpts;
  /** 3: the answer to a NOTIFY; false makes CRIU abort the dump or restore. */
  notifySuccess?: boolean;
  keepOpen?: boolean;
  /** 6: for WAIT_PID. */
  pid?: number;
}

export interface CriuVersion {
  major: number;
  minor: number;
  sublevel?: number;
  extra?: number;
  gitid?: string;
  name?: string;
}

export interface CriuResp {
  type: CriuReqType;
  success: boolean;
  /** 3: `restored` is set only by a self-dump that was restored. */
  dump?: { restored?: boolean };
  /** 4: pid of the restored root task, in CRIU's pid namespace. */
  restore?: { pid: number };
  /** 5: present on NOTIFY messages. */
  notify?: { script?: string; pid?: number };
  /** 7: CRIU's error number when it set one (e.g. EBADRQC for bad options). */
  crErrno?: number;
  /** 9 */
  crErrmsg?: string;
  /** 10 */
  version?: CriuVersion;
  /** 11 */
  status?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;
const UINT32_MAX = 0xffff_ffff;

/** Appends protobuf fields to a growing byte list; messages here are small (hundreds of bytes). */
interface Writer {
  bytes: number[];
}

function varint(w: Writer, value: bigint): void {
  let v = BigInt.asUintN(64, value);
  while (v >= 0x80n) {
    w.bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  w.bytes.push(Number(v));
}

function tag(w: Writer, field: number, wire: number): void {
  varint(w, BigInt(field * 8 + wire));
}

function checkInt(field: number, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidRequestError(`criu rpc field ${field}: ${value} is not an integer in [${min}, ${max}]`);
  }
}

/** int32 and enums: negative values are sign-extended to ten bytes, as proto2 requires. */
function int32(w: Writer, field: number, value: number | undefined): void {
  if (value === undefined) return;
  checkInt(field, value, INT32_MIN, INT32_MAX);
  tag(w, field, WIRE_VARINT);
  varint(w, BigInt(value));
}

function uint32(w: Writer, field: number, value: number | undefined): void {
  if (value === undefined) return;
  checkInt(field, value, 0, UINT32_MAX);
  tag(w, field, WIRE_VARINT);
  varint(w, BigInt(value));
}

function bool(w: Writer, field: number, value: boolean | undefined): void {
  if (value === undefined) return;
  tag(w, field, WIRE_VARINT);
  w.bytes.push(value ? 1 : 0);
}

function bytesField(w: Writer, field: number, value: Uint8Array): void {
  tag(w, field, WIRE_LEN);
  varint(w, BigInt(value.length));
  for (const b of value) w.bytes.push(b);
}

function string(w: Writer, field: number, value: string | undefined): void {
  if (value === undefined) return;
  bytesField(w, field, Buffer.from(value, 'utf8'));
}

function message<T>(w: Writer, field: number, value: T | undefined, encode: (w: Writer, v: T) => void): void {
  if (value === undefined) return;
  const inner: Writer = { bytes: [] };
  encode(inner, value);
  bytesField(w, field, Uint8Array.from(inner.bytes));
}

function encodeInheritFd(w: Writer, v: CriuInheritFd): void {
  string(w, 1, v.key);
  int32(w, 2, v.fd);
}

function encodePs(w: Writer, v: CriuPageServerInfo): void {
  string(w, 1, v.address);
  int32(w, 2, v.port);
  int32(w, 4, v.fd);
}

function encodeOpts(w: Writer, o: CriuOpts): void {
  int32(w, 1, o.imagesDirFd ?? -1);
  int32(w, 2, o.pid);
  bool(w, 3, o.leaveRunning);
  bool(w, 4, o.extUnixSk);
  bool(w, 5, o.tcpEstablished);
  bool(w, 7, o.shellJob);
  bool(w, 8, o.fileLocks);
  int32(w, 9, o.logLevel);
  string(w, 10, o.logFile);
  message(w, 11, o.ps, encodePs);
  bool(w, 12, o.notifyScripts);
  int32(w, 17, o.workDirFd);
  bool(w, 26, o.rstSibling);
  for (const fd of o.inheritFd ?? []) message(w, 27, fd, encodeInheritFd);
  int32(w, 34, o.manageCgroupsMode === undefined ? undefined : CRIU_CG_MODES[o.manageCgroupsMode]);
  for (const ext of o.external ?? []) string(w, 37, ext);
  uint32(w, 38, o.emptyNs);
  uint32(w, 45, o.timeout);
  bool(w, 46, o.tcpSkipInFlight);
  bool(w, 48, o.lazyPages);
  bool(w, 50, o.orphanPtsMaster);
  string(w, 51, o.configFile);
  bool(w, 52, o.tcpClose);
  int32(w, 64, o.networkLock === undefined ? undefined : CRIU_NETWORK_LOCKS[o.networkLock]);
  string(w, 68, o.imagesDir);
  bool(w, 69, o.leaveStopped);
  bool(w, 71, o.logToStderr);
}

/** Encodes a criu_req as CRIU's swrk expects it: one message, no length prefix. */
export function encodeCriuReq(req: CriuReq): Uint8Array {
  const w: Writer = { bytes: [] };
  int32(w, 1, CRIU_REQ_TYPES[req.type]);
  message(w, 2, req.opts, encodeOpts);
  bool(w, 3, req.notifySuccess);
  bool(w, 4, req.keepOpen);
  uint32(w, 6, req.pid);
  return Uint8Array.from(w.bytes);
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

/** Longest varint: ten bytes carry 64 bits. */
const MAX_VARINT_BYTES = 10;

interface Field {
  field: number;
  wire: number;
  /** Set for WIRE_VARINT. */
  varint: bigint;
  /** Set for WIRE_LEN. */
  bytes: Uint8Array;
}

function readVarint(buf: Uint8Array, pos: { at: number }): bigint {
  let v = 0n;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos.at >= buf.length) throw new DecodeError('criu rpc: truncated varint');
    const b = buf[pos.at++]!;
    v |= BigInt(b & 0x7f) << BigInt(7 * i);
    if ((b & 0x80) === 0) return v;
  }
  throw new DecodeError('criu rpc: varint longer than 10 bytes');
}

/** Splits a message into its fields, in order; skips fixed-width ones (no field used here has them). */
function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  const pos = { at: 0 };
  const empty = new Uint8Array(0);
  while (pos.at < buf.length) {
    const key = readVarint(buf, pos);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field === 0) throw new DecodeError('criu rpc: field number 0');
    if (wire === WIRE_VARINT) {
      out.push({ field, wire, varint: readVarint(buf, pos), bytes: empty });
    } else if (wire === WIRE_LEN) {
      const len = Number(readVarint(buf, pos));
      if (len > buf.length - pos.at) throw new DecodeError(`criu rpc: field ${field} overruns the message`);
      out.push({ field, wire, varint: 0n, bytes: buf.subarray(pos.at, pos.at + len) });
      pos.at += len;
    } else if (wire === WIRE_I64 || wire === WIRE_I32) {
      pos.at += wire === WIRE_I64 ? 8 : 4;
      if (pos.at > buf.length) throw new DecodeError(`criu rpc: field ${field} overruns the message`);
    } else {
      throw new DecodeError(`criu rpc: unsupported wire type ${wire} (field ${field})`);
    }
  }
  return out;
}

const asInt32 = (f: Field): number => Number(BigInt.asIntN(32, f.varint));
const asBool = (f: Field): boolean => f.varint !== 0n;
const asString = (f: Field): string => Buffer.from(f.bytes).toString('utf8');

const REQ_TYPE_BY_NUMBER = new Map<number, CriuReqType>(
  Object.entries(CRIU_REQ_TYPES).map(([name, n]) => [n, name as CriuReqType]),
);

function reqType(n: number): CriuReqType {
  const t = REQ_TYPE_BY_NUMBER.get(n);
  if (t === undefined) throw new DecodeError(`criu rpc: unknown request type ${n}`);
  return t;
}

function decodeVersion(buf: Uint8Array): CriuVersion {
  let major: number | undefined;
  let minor: number | undefined;
  const v: Partial<CriuVersion> = {};
  for (const f of fields(buf)) {
    if (f.field === 1 && f.wire === WIRE_VARINT) major = asInt32(f);
    else if (f.field === 2 && f.wire === WIRE_VARINT) minor = asInt32(f);
    else if (f.field === 3 && f.wire === WIRE_LEN) v.gitid = asString(f);
    else if (f.field === 4 && f.wire === WIRE_VARINT) v.sublevel = asInt32(f);
    else if (f.field === 5 && f.wire === WIRE_VARINT) v.extra = asInt32(f);
    else if (f.field === 6 && f.wire === WIRE_LEN) v.name = asString(f);
  }
  if (major === undefined || minor === undefined) throw new DecodeError('criu rpc: criu_version without major/minor');
  return { major, minor, ...v };
}

function decodeRestore(buf: Uint8Array): { pid: number } {
  const pid = fields(buf).find((f) => f.field === 1 && f.wire === WIRE_VARINT);
  if (pid === undefined) throw new DecodeError('criu rpc: criu_restore_resp without pid');
  return { pid: asInt32(pid) };
}

function decodeNotify(buf: Uint8Array): { script?: string; pid?: number } {
  const n: { script?: string; pid?: number } = {};
  for (const f of fields(buf)) {
    if (f.field === 1 && f.wire === WIRE_LEN) n.script = asString(f);
    else if (f.field === 2 && f.wire === WIRE_VARINT) n.pid = asInt32(f);
  }
  return n;
}

function decodeDump(buf: Uint8Array): { restored?: boolean } {
  const restored = fields(buf).find((f) => f.field === 1 && f.wire === WIRE_VARINT);
  return restored === undefined ? {} : { restored: asBool(restored) };
}

/** Decodes a criu_resp. Throws DecodeError on malformed bytes or a missing required field. */
export function decodeCriuResp(buf: Uint8Array): CriuResp {
  let type: CriuReqType | undefined;
  let success: boolean | undefined;
  const r: Partial<CriuResp> = {};
  for (const f of fields(buf)) {
    const v = f.wire === WIRE_VARINT;
    const l = f.wire === WIRE_LEN;
    if (f.field === 1 && v) type = reqType(asInt32(f));
    else if (f.field === 2 && v) success = asBool(f);
    else if (f.field === 3 && l) r.dump = decodeDump(f.bytes);
    else if (f.field === 4 && l) r.restore = decodeRestore(f.bytes);
    else if (f.field === 5 && l) r.notify = decodeNotify(f.bytes);
    else if (f.field === 7 && v) r.crErrno = asInt32(f);
    else if (f.field === 9 && l) r.crErrmsg = asString(f);
    else if (f.field === 10 && l) r.version = decodeVersion(f.bytes);
    else if (f.field === 11 && v) r.status = asInt32(f);
  }
  if (type === undefined || success === undefined) throw new DecodeError('criu rpc: criu_resp without type/success');
  return { type, success, ...r };
}

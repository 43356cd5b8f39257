/**
 * @module
 * De-aggregation of records that the Kinesis Producer Library (KPL) packed
 * together: 4 magic bytes, a protobuf `AggregatedRecord`, then the MD5 of
 * that protobuf. A record that does not have this exact shape is a plain
 * record, as the KCL treats it.
 */
import { createHash } from "node:crypto";

/** The 4 bytes that open a KPL aggregated record. */
export const KPL_MAGIC: Uint8Array = Uint8Array.of(0xf3, 0x89, 0x9a, 0xc2);

const MD5_LENGTH = 16;

/** One user record from inside a KPL aggregated record. */
export interface UserRecord {
  /** The user record's partition key. */
  partitionKey: string;
  /** Its explicit hash key, if it has one. */
  explicitHashKey?: string;
  /** Its payload. */
  data: Uint8Array;
}

/**
 * Unpacks a KPL aggregated record into its user records, in order; returns
 * `undefined` when `data` is not an aggregated record (no magic, a bad MD5
 * or a malformed protobuf), so that the caller passes it on as it is.
 *
 * @example
 * ```ts
 * const subs = deaggregate(record.Data) ?? [{ partitionKey: record.PartitionKey, data: record.Data }]
 * ```
 */
export function deaggregate(data: Uint8Array): UserRecord[] | undefined {
  if (data.length < KPL_MAGIC.length + MD5_LENGTH) return undefined;
  for (let i = 0; i < KPL_MAGIC.length; i++) if (data[i] !== KPL_MAGIC[i]) return undefined;
  const body = data.subarray(KPL_MAGIC.length, data.length - MD5_LENGTH);
  const digest = createHash("md5").update(body).digest();
  const trailer = data.subarray(data.length - MD5_LENGTH);
  for (let i = 0; i < MD5_LENGTH; i++) if (digest[i] !== trailer[i]) return undefined;
  try {
    return decodeAggregatedRecord(body);
  } catch {
    return undefined;
  }
}

// message AggregatedRecord {
//   repeated string partition_key_table = 1;
//   repeated string explicit_hash_key_table = 2;
//   repeated Record records = 3;
// }
// message Record {
//   required uint64 partition_key_index = 1;
//   optional uint64 explicit_hash_key_index = 2;
//   required bytes data = 3;
//   repeated Tag tags = 4;   // skipped
// }
const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeAggregatedRecord(buf: Uint8Array): UserRecord[] {
  const partitionKeys: string[] = [];
  const hashKeys: string[] = [];
  const raw: { pk: number; ehk?: number; data: Uint8Array }[] = [];
  const r = new ProtoReader(buf);
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === 2) partitionKeys.push(utf8.decode(r.bytes()));
    else if (field === 2 && wire === 2) hashKeys.push(utf8.decode(r.bytes()));
    else if (field === 3 && wire === 2) raw.push(decodeRecord(r.bytes()));
    else r.skip(wire);
  }
  return raw.map((rec) => {
    const partitionKey = partitionKeys[rec.pk];
    if (partitionKey === undefined) throw new Error(`partition key index ${rec.pk} out of range`);
    const out: UserRecord = { partitionKey, data: rec.data };
    if (rec.ehk !== undefined) {
      const ehk = hashKeys[rec.ehk];
      if (ehk === undefined) throw new Error(`explicit hash key index ${rec.ehk} out of range`);
      out.explicitHashKey = ehk;
    }
    return out;
  });
}

function decodeRecord(buf: Uint8Array): { pk: number; ehk?: number; data: Uint8Array } {
  let pk: number | undefined;
  let ehk: number | undefined;
  let data: Uint8Array | undefined;
  const r = new ProtoReader(buf);
  while (!r.done()) {
    const { field, wire } = r.tag();
    if (field === 1 && wire === 0) pk = r.varint();
    else if (field === 2 && wire === 0) ehk = r.varint();
    else if (field === 3 && wire === 2) data = r.bytes();
    else r.skip(wire);
  }
  if (pk === undefined || data === undefined) throw new Error("a Record misses partition_key_index or data");
  return { pk, ehk, data };
}

/** Just enough of the protobuf wire format: varints, length-delimited fields, and skipping. */
class ProtoReader {
  private pos = 0;
  constructor(private readonly buf: Uint8Array) {}

  done(): boolean {
    return this.pos >= this.buf.length;
  }

  tag(): { field: number; wire: number } {
    const t = this.varint();
    return { field: Math.floor(t / 8), wire: t % 8 };
  }

  /** A varint as a JS number; table indexes and lengths are far below 2^53. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new Error("truncated varint");
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw new Error("varint longer than 10 bytes");
  }

  bytes(): Uint8Array {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.buf.length) throw new Error("truncated length-delimited field");
    const out = this.buf.subarray(this.pos, end);
    this.pos = end;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.advance(8);
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.advance(4);
    else throw new Error(`unsupported wire type ${wire}`);
  }

  private advance(n: number): void {
    if (this.pos + n > this.buf.length) throw new Error("truncated fixed field");
    this.pos += n;
  }
}

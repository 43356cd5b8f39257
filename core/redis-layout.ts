/**
 * @module
 * The key layout and Lua scripts shared by the Redis-protocol online stores
 * (`redisStore` over TCP, `upstashStore` over REST). Plain strings and pure
 * functions: no SDK, no runtime global, so both plugins (and a Worker) use
 * the very same bytes.
 *
 * Keys (`base` = `{prefix}:{project}:`, prefix "freshet" by default):
 * - `{base}{view}:{entityKey}`: a hash per entity and view. One field per
 *   feature, its value JSON-encoded so that numbers, strings, booleans,
 *   null, arrays and objects come back as they went in; `_ts` is the event
 *   time and `_ct` the created time (absent when the row had none), both
 *   epoch ms as decimal strings. A feature whose name starts with `_` is
 *   stored as `_` + name, so no feature can collide with `_ts` or `_ct`.
 * - `{base}#claim:{key}`, `{base}#cp:{key}`, `{base}#lease:{key}` and the
 *   lease index `{base}#leases`: metadata. View names cannot contain `#`, so
 *   metadata never collides with features.
 *
 * Every key a script touches is passed in KEYS (Redis' contract for
 * scripts). On Redis Cluster the one-script-per-batch write needs all keys
 * in one slot: give the store a hash-tagged prefix such as `"{freshet}"`.
 */
import type { FeatureRow, FeatureValue, Lease } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";
import { FreshetError } from "./errors.ts";
import { featureValue } from "./online.ts";

/** A Lua script with its SHA1, for EVALSHA with a fallback to EVAL on NOSCRIPT. */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

/** Key names of one store: a prefix and a project. */
export interface RedisLayout {
  /** `{prefix}:{project}:`, the start of every key. */
  readonly base: string;
  /** The hash of one entity of one view. */
  entityKey(view: string, entityKey: string): string;
  claimKey(key: string): string;
  checkpointKey(key: string): string;
  leaseKey(key: string): string;
  /** The sorted set (all scores 0) of lease names, for `listLeases` by prefix. */
  readonly leaseIndexKey: string;
}

/** The default key prefix. */
export const DEFAULT_REDIS_PREFIX = "freshet";
/** The default project segment of the keys. */
export const DEFAULT_REDIS_PROJECT = "default";

/**
 * The key layout for a prefix and project.
 *
 * @example
 * ```ts
 * const keys = redisLayout({ project: "driver_stats" })
 * keys.entityKey("driver_hourly_stats", "driver_id=1001") // "freshet:driver_stats:driver_hourly_stats:driver_id=1001"
 * ```
 */
export function redisLayout(opts: { prefix?: string; project?: string } = {}): RedisLayout {
  const prefix = opts.prefix ?? DEFAULT_REDIS_PREFIX;
  const project = opts.project ?? DEFAULT_REDIS_PROJECT;
  for (const [name, v] of [["prefix", prefix], ["project", project]] as const) {
    if (typeof v !== "string" || v === "" || v.includes(":")) {
      throw new FreshetError("INVALID_CONFIG", `${name} ${JSON.stringify(v)} must be a non-empty string without ":"`, { plugin: "redis" });
    }
  }
  const base = `${prefix}:${project}:`;
  return {
    base,
    entityKey: (view, entityKey) => `${base}${view}:${entityKey}`,
    claimKey: (key) => `${base}#claim:${key}`,
    checkpointKey: (key) => `${base}#cp:${key}`,
    leaseKey: (key) => `${base}#lease:${key}`,
    leaseIndexKey: `${base}#leases`,
  };
}

/**
 * The hash field of a feature: its name, with one more `_` in front when it
 * starts with `_` (injective, and never `_ts` or `_ct`).
 *
 * @example
 * ```ts
 * featureField("conv_rate") // "conv_rate"
 * featureField("_ts")       // "__ts"
 * ```
 */
export function featureField(feature: string): string {
  return feature.charCodeAt(0) === 95 /* _ */ ? "_" + feature : feature;
}

// ---- write ---------------------------------------------------------------

/** One row, encoded for the write script. */
export interface EncodedRow {
  key: string;
  /** Event time, epoch ms, as a decimal string. */
  ts: string;
  /** Created time, or "" when the row has none. */
  ct: string;
  /** Hash fields (see {@link featureField}), in the order of `values`. */
  fields: string[];
  /** JSON-encoded values. */
  values: string[];
}

const jsonValue = (v: unknown): string => {
  try {
    return JSON.stringify(v);
  } catch {
    // BigInt: a safe integer as a number, a larger one as its decimal string.
    return JSON.stringify(v, (_k, x) => typeof x === "bigint" ? (Number.isSafeInteger(Number(x)) ? Number(x) : x.toString()) : x);
  }
};

/**
 * Encodes rows for {@link WRITE_ROWS}. Values that are `undefined` are left
 * out (that feature reads back as NOT_FOUND); everything else is JSON.
 *
 * @example
 * ```ts
 * const rows = encodeRows(redisLayout(), view, [{ entityKey: "driver_id=1", values: { trips: 3 }, eventTime: Date.now() }])
 * ```
 */
export function encodeRows(layout: RedisLayout, view: FeatureView, rows: readonly FeatureRow[], plugin = "redis"): EncodedRow[] {
  const out: EncodedRow[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    if (typeof r.eventTime !== "number" || !Number.isFinite(r.eventTime)) {
      throw new FreshetError("INVALID_INPUT", `row ${i} (${r.entityKey}) has event time ${String(r.eventTime)}: it must be epoch ms`, { plugin, definition: view.name, retriable: false });
    }
    if (r.createdTime !== undefined && (typeof r.createdTime !== "number" || !Number.isFinite(r.createdTime))) {
      throw new FreshetError("INVALID_INPUT", `row ${i} (${r.entityKey}) has created time ${String(r.createdTime)}: it must be epoch ms`, { plugin, definition: view.name, retriable: false });
    }
    const fields: string[] = [];
    const values: string[] = [];
    for (const name in r.values) {
      const v = r.values[name];
      if (v === undefined) continue;
      fields.push(featureField(name));
      values.push(jsonValue(v));
    }
    out[i] = {
      key: layout.entityKey(view.name, r.entityKey),
      ts: String(r.eventTime),
      ct: r.createdTime === undefined ? "" : String(r.createdTime),
      fields,
      values,
    };
  }
  return out;
}

const sameFields = (a: string[], b: string[]) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

/**
 * KEYS and ARGV of one {@link WRITE_ROWS} call. ARGV is flat (no JSON to
 * decode in Lua): `ttlMs`, then segments of rows that share their fields,
 * each `nFields, field..., nRows, (ts, ct, value...) x nRows`. KEYS holds
 * one key per row, in order.
 *
 * @example
 * ```ts
 * const { keys, args } = writeScriptArgs(encodeRows(layout, view, rows), view.ttlMs)
 * await redis.evalsha(WRITE_ROWS.sha, keys.length, ...keys, ...args)
 * ```
 */
export function writeScriptArgs(rows: readonly EncodedRow[], ttlMs: number): { keys: string[]; args: string[] } {
  const keys: string[] = new Array(rows.length);
  const args: string[] = [String(Math.max(0, Math.round(ttlMs)))];
  let fields: string[] | undefined;
  let countAt = -1;
  let count = 0;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    keys[i] = r.key;
    if (!fields || !sameFields(fields, r.fields)) {
      if (countAt >= 0) args[countAt] = String(count);
      fields = r.fields;
      args.push(String(fields.length), ...fields, "");
      countAt = args.length - 1;
      count = 0;
    }
    args.push(r.ts, r.ct);
    for (const v of r.values) args.push(v);
    count++;
  }
  if (countAt >= 0) args[countAt] = String(count);
  return { keys, args };
}

/**
 * Writes a batch, latest-wins per entity, in one call. For each row: read
 * the stored `_ts`/`_ct`; write only when strictly newer (event time, then
 * created time, a missing created time counting as -1: the rule of
 * `supersedes`), replacing the whole hash and setting its PEXPIRE (ttl 0:
 * none). Rows are handled in order, so duplicates within a batch are
 * stale too. Returns `{written, stale}`.
 *
 * Times are compared as Lua numbers (doubles), exact for epoch ms; they are
 * stored as the strings the client sent, never reformatted by Lua.
 */
export const WRITE_ROWS: LuaScript = script("freshet_write_rows", `
local ttl = tonumber(ARGV[1])
local n = #ARGV
local a, k = 2, 1
local written, stale = 0, 0
while a <= n do
  local nf = tonumber(ARGV[a])
  local f0 = a + 1
  local rows = tonumber(ARGV[f0 + nf])
  a = f0 + nf + 1
  for _ = 1, rows do
    local key = KEYS[k]
    local ts, ct = ARGV[a], ARGV[a + 1]
    local cur = redis.call('HMGET', key, '_ts', '_ct')
    local newer = true
    if cur[1] then
      local its, sts = tonumber(ts), tonumber(cur[1])
      if its ~= sts then
        newer = its > sts
      else
        local ict = -1
        if ct ~= '' then ict = tonumber(ct) end
        local sct = -1
        if cur[2] then sct = tonumber(cur[2]) end
        newer = ict > sct
      end
    end
    if newer then
      if cur[1] then redis.call('DEL', key) end
      local h = {'_ts', ts}
      if ct ~= '' then h[3] = '_ct'; h[4] = ct end
      local j = #h
      for i = 0, nf - 1 do
        h[j + 1] = ARGV[f0 + i]
        h[j + 2] = ARGV[a + 2 + i]
        j = j + 2
      end
      if j <= 7000 then
        redis.call('HSET', key, unpack(h))
      else -- unpack is bounded by Lua's C stack (~8000 values): in slices of whole pairs
        for s = 1, j, 7000 do redis.call('HSET', key, unpack(h, s, math.min(s + 6999, j))) end
      end
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
      written = written + 1
    else
      stale = stale + 1
    end
    a = a + 2 + nf
    k = k + 1
  end
end
return {written, stale}
`);

// ---- read ----------------------------------------------------------------

/**
 * The HMGET fields for reading `features`: their hash fields, then `_ts`.
 *
 * @example
 * ```ts
 * await redis.hmget(key, ...readFields(["conv_rate", "trips"]))
 * ```
 */
export function readFields(features: readonly string[]): string[] {
  const out = features.map(featureField);
  out.push("_ts");
  return out;
}

/**
 * Turns one HMGET reply (for {@link readFields}) into feature values, with
 * their status and the view's ttl enforced (`featureValue`).
 *
 * @example
 * ```ts
 * decodeRead(view, ["0.5", "7", "1767225600000"], ["conv_rate", "trips"], Date.now())
 * ```
 */
export function decodeRead(view: FeatureView, reply: readonly (string | null | undefined)[] | null | undefined, features: readonly string[], now: number): Record<string, FeatureValue> {
  const out: Record<string, FeatureValue> = {};
  const ts = reply?.[features.length];
  if (reply == null || ts == null) {
    for (const f of features) out[f] = featureValue(view, undefined, f, now);
    return out;
  }
  const values: Record<string, unknown> = {};
  for (let i = 0; i < features.length; i++) {
    const raw = reply[i];
    if (raw == null) continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      v = raw; // written by something else than Freshet: keep the raw string
    }
    values[features[i]] = v;
  }
  const stored = { values, eventTime: Number(ts) };
  for (const f of features) out[f] = featureValue(view, stored, f, now);
  return out;
}

// ---- metadata ------------------------------------------------------------

// Redis TIME in epoch ms inside a script: one clock for every worker.
const NOW_MS = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

// TIME is non-deterministic: on Redis < 5 a script must ask for effects
// replication before it writes. A no-op on Redis 7 and on Upstash.
const EFFECTS = `if redis.replicate_commands then pcall(redis.replicate_commands) end`;

/**
 * Claims an idempotency key: `SET NX PX` with a token unique to the call.
 * KEYS: the claim. ARGV: token, ttlMs (0: no expiry). Returns 1 when this
 * call holds the claim, also when a retry of the same call (same token)
 * finds its own earlier SET, so a request retried after a lost response is
 * not taken for a duplicate of itself; 0 when another call holds it.
 */
export const CLAIM: LuaScript = script("freshet_claim", `
local ok
if tonumber(ARGV[2]) > 0 then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if ok then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
`);

/**
 * Moves a checkpoint forward. KEYS: checkpoint, and the lease when fenced.
 * ARGV: value, owner, counter. Values compare as decimal integers of any
 * length (Kinesis sequence numbers have ~56 digits): leading zeros
 * stripped, then by length, then digit by digit. Fenced: refused unless the
 * lease has that owner and counter and has not expired on Redis' clock.
 * Returns 1 when moved, 0 when refused.
 */
export const SET_CHECKPOINT: LuaScript = script("freshet_set_checkpoint", `
${EFFECTS}
${NOW_MS}
local function norm(s)
  local t = string.gsub(s, '^0+', '')
  if t == '' then return '0' end
  return t
end
local function cmp(x, y)
  x, y = norm(x), norm(y)
  if #x ~= #y then
    if #x < #y then return -1 else return 1 end
  end
  for i = 1, #x do
    local p, q = string.byte(x, i), string.byte(y, i)
    if p ~= q then
      if p < q then return -1 else return 1 end
    end
  end
  return 0
end
if #KEYS > 1 then
  local l = redis.call('HMGET', KEYS[2], 'owner', 'counter', 'expiresAt')
  if l[1] ~= ARGV[2] or tonumber(l[2]) ~= tonumber(ARGV[3]) then return 0 end
  if tonumber(l[3]) <= now_ms() then return 0 end
end
local cur = redis.call('GET', KEYS[1])
if cur and cmp(ARGV[1], cur) <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`);

/**
 * Takes or renews a lease. KEYS: lease hash, lease index. ARGV: owner,
 * ttlMs, lease name. Succeeds when the lease is free, expired or held by
 * the same owner; the counter (fencing token) goes up whenever it changes
 * hands or was expired. Expiry is on Redis' clock. The hash itself never
 * expires, so the counter never goes back. Returns `{counter, expiresAt}`
 * or nil when another owner holds it.
 */
export const ACQUIRE_LEASE: LuaScript = script("freshet_acquire_lease", `
${EFFECTS}
${NOW_MS}
local now = now_ms()
local l = redis.call('HMGET', KEYS[1], 'owner', 'counter', 'expiresAt')
local owner = l[1] or ''
local counter = tonumber(l[2] or '0')
local exp = tonumber(l[3] or '0')
if owner ~= '' and owner ~= ARGV[1] and exp > now then return false end
if not (owner == ARGV[1] and exp > now) then counter = counter + 1 end
local e = now + tonumber(ARGV[2])
local cs, es = string.format('%.0f', counter), string.format('%.0f', e)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'counter', cs, 'expiresAt', es)
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return {cs, es}
`);

/** Releases a lease held by ARGV[1] (KEYS: lease hash): no owner, expired, counter kept. Returns 1 when released. */
export const RELEASE_LEASE: LuaScript = script("freshet_release_lease", `
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '', 'expiresAt', '0')
return 1
`);

/**
 * Lists leases whose name starts with ARGV[1]. KEYS: the lease index.
 * ARGV[2] is the lease key prefix (`{base}#lease:`): the hashes are derived
 * from the index, which is why they are not in KEYS (they share its hash
 * tag, if any). Returns a flat `name, owner, counter, expiresAt` list.
 */
export const LIST_LEASES: LuaScript = script("freshet_list_leases", `
local lo, hi = '-', '+'
if ARGV[1] ~= '' then lo = '[' .. ARGV[1]; hi = '(' .. ARGV[1] .. '\\255' end
local names = redis.call('ZRANGEBYLEX', KEYS[1], lo, hi)
local out = {}
for _, name in ipairs(names) do
  local l = redis.call('HMGET', ARGV[2] .. name, 'owner', 'counter', 'expiresAt')
  if l[2] then
    out[#out + 1] = name
    out[#out + 1] = l[1] or ''
    out[#out + 1] = l[2]
    out[#out + 1] = l[3] or '0'
  end
end
return out
`);

/** Every script, for SCRIPT LOAD or a check that EVALSHA will find them. */
export const REDIS_SCRIPTS: readonly LuaScript[] = [WRITE_ROWS, CLAIM, SET_CHECKPOINT, ACQUIRE_LEASE, RELEASE_LEASE, LIST_LEASES];

/**
 * The lease from an {@link ACQUIRE_LEASE} reply, or undefined for nil.
 *
 * @example
 * ```ts
 * decodeLease("shard-0", "worker-a", ["3", "1767225601000"]) // { key: "shard-0", owner: "worker-a", counter: 3, expiresAt: 1767225601000 }
 * ```
 */
export function decodeLease(key: string, owner: string, reply: unknown): Lease | undefined {
  if (!Array.isArray(reply) || reply.length < 2) return undefined;
  return { key, owner, counter: Number(reply[0]), expiresAt: Number(reply[1]) };
}

/**
 * The leases from a {@link LIST_LEASES} reply.
 *
 * @example
 * ```ts
 * decodeLeaseList(["shard-0", "worker-a", "3", "1767225601000"])
 * ```
 */
export function decodeLeaseList(reply: unknown): Lease[] {
  const out: Lease[] = [];
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 3 < reply.length; i += 4) {
    out.push({ key: String(reply[i]), owner: String(reply[i + 1] ?? ""), counter: Number(reply[i + 2]), expiresAt: Number(reply[i + 3]) });
  }
  return out;
}

/**
 * Checks a checkpoint value before it is sent: a non-negative decimal
 * integer, as `compareDecimal` expects.
 *
 * @example
 * ```ts
 * assertDecimal("49590338271490256608559692538361571095921575989136588898", "redis")
 * ```
 */
export function assertDecimal(value: string, plugin: string): void {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new FreshetError("INVALID_INPUT", `checkpoint ${JSON.stringify(value)} is not a non-negative decimal integer`, { plugin, retriable: false });
  }
}

// ---- SHA1 (for EVALSHA), pure so that the core needs no crypto global ----

function script(name: string, source: string): LuaScript {
  const src = source.trim() + "\n";
  return { name, source: src, sha: sha1Hex(src) };
}

/**
 * SHA1 of a string's UTF-8 bytes, in hex: what Redis names a script by.
 *
 * @example
 * ```ts
 * sha1Hex("abc") // "a9993e364706816aba3e25717850c26c9cd0d89d"
 * ```
 */
export function sha1Hex(text: string): string {
  const bytes = utf8(text);
  const bitLen = bytes.length * 8;
  const padded = new Uint8Array(((bytes.length + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[bytes.length] = 0x80;
  const dv = new DataView(padded.buffer);
  dv.setUint32(padded.length - 8, Math.floor(bitLen / 0x100000000));
  dv.setUint32(padded.length - 4, bitLen >>> 0);
  let h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
  const w = new Uint32Array(80);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + i * 4);
    for (let i = 16; i < 80; i++) {
      const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
      w[i] = (x << 1) | (x >>> 31);
    }
    let a = h0, b = h1, c = h2, d = h3, e = h4;
    for (let i = 0; i < 80; i++) {
      const [f, k] = i < 20 ? [(b & c) | (~b & d), 0x5a827999] : i < 40 ? [b ^ c ^ d, 0x6ed9eba1] : i < 60 ? [(b & c) | (b & d) | (c & d), 0x8f1bbcdc] : [b ^ c ^ d, 0xca62c1d6];
      const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
      e = d;
      d = c;
      c = (b << 30) | (b >>> 2);
      b = a;
      a = t;
    }
    h0 = (h0 + a) >>> 0;
    h1 = (h1 + b) >>> 0;
    h2 = (h2 + c) >>> 0;
    h3 = (h3 + d) >>> 0;
    h4 = (h4 + e) >>> 0;
  }
  return [h0, h1, h2, h3, h4].map((h) => h.toString(16).padStart(8, "0")).join("");
}

function utf8(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

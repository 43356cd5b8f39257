/**
 * @module
 * The Lua scripts of the Redis family and the arguments they take. Each
 * script is one atomic step on the server, the same for TCP and REST.
 *
 * The write script (`WRITE_ROWS`) applies a batch latest-wins and, in the
 * same call, the batch's commit (watermarks raised, idempotency key marked
 * done), so the state that guards an effect never runs ahead of it:
 *
 * ```
 * KEYS: per part: rowKey x nRows, watermarkKey x nWm, [doneKey]
 * ARGV: nParts, then per part: [nArgs, nKeys (only when nParts > 1)],
 *       ttlMs, nowMs, nRows,
 *       segments: (nFields, field x nFields, nRowsInSegment, (ts, ct, value x nFields) x nRowsInSegment)...,
 *       trailer:  nWm, watermark x nWm, nDone (0 or 1), [doneFingerprint, doneTtlMs]
 * ```
 *
 * A part is one write (its rows and its commit); several parts in one call
 * are the writes of concurrent requests (group commit, see
 * {@link groupScriptArgs}), applied in order, each counted apart, each
 * failing apart: a part whose command fails (a key of another type) is
 * answered `-1, error` and stops there, before its commit, while the parts
 * around it are applied (rows it wrote before the failing command stay, as
 * with any script error; a lone write's failure is the script's error, as
 * for any script). Rows that
 * share their fields share a segment, so ARGV carries each field name once
 * per run, with no JSON to decode in Lua. `ct` is "" for a row without a
 * created time. The done pair and key are there exactly when nDone is 1.
 */
import type { Lease } from "../../../core/contracts.ts";
import { FreshetError } from "../../../core/errors.ts";
import type { EncodedCommit, EncodedRow } from "./layout.ts";

/** A Lua script; Redis names it by the SHA1 of `source` (see {@link scriptSha}). */
export interface LuaScript {
  readonly name: string;
  readonly source: string;
}

function script(name: string, source: string): LuaScript {
  return { name, source: source.trim() + "\n" };
}

const shas = new Map<LuaScript, Promise<string>>();

/**
 * The SHA1 of a script's source in hex, for EVALSHA: computed once with
 * WebCrypto (every runtime, Workers included), then cached.
 *
 * @example
 * ```ts
 * await redis.call("EVALSHA", await scriptSha(BEGIN), 1, key, fingerprint, token, "30000")
 * ```
 */
export function scriptSha(s: LuaScript): Promise<string> {
  let sha = shas.get(s);
  if (!sha) {
    sha = crypto.subtle.digest("SHA-1", new TextEncoder().encode(s.source)).then((d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join(""));
    shas.set(s, sha);
  }
  return sha;
}

// Monotone max of a watermark: compared as numbers (epoch ms, negative
// before 1970), stored as the string the client sent.
const RAISE_WATERMARK = `
local function raise_watermark(key, v)
  local cur = redis.call('GET', key)
  if cur and tonumber(cur) and tonumber(cur) >= tonumber(v) then return cur end
  redis.call('SET', key, v)
  return v
end
`;

// ---- write ---------------------------------------------------------------

const sameFields = (a: string[], b: string[]) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

/**
 * KEYS and ARGV of one {@link WRITE_ROWS} call (layout in the module doc).
 * `now` is the store's clock, for the expiry check; `commit` is applied in
 * the same call, also when there are no rows.
 *
 * @example
 * ```ts
 * const { keys, args } = writeScriptArgs(encodeRows(layout, view, rows, "redis"), view.ttlMs, Date.now(), encodeCommit(layout, commit, "redis"))
 * await redis.call("EVALSHA", await scriptSha(WRITE_ROWS), keys.length, ...keys, ...args)
 * ```
 */
export function writeScriptArgs(rows: readonly EncodedRow[], ttlMs: number, now: number, commit?: EncodedCommit): { keys: string[]; args: string[] } {
  const keys: string[] = new Array(rows.length);
  const args: string[] = ["1", String(Math.max(0, Math.round(ttlMs))), String(now), String(rows.length)];
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
  args.push(String(commit?.watermarks.length ?? 0));
  if (commit) {
    for (let i = 0; i < commit.watermarks.length; i++) {
      keys.push(commit.watermarkKeys[i]);
      args.push(commit.watermarks[i]);
    }
  }
  if (commit?.done) {
    keys.push(commit.done.key);
    args.push("1", commit.done.fingerprint, commit.done.ttlMs);
  } else args.push("0");
  return { keys, args };
}

/**
 * The `maxRowsPerCall` option of a Redis-family store: at most this many rows
 * in one write-script call (default 5000, so that one call never holds the
 * server for long), or a startup error naming the option.
 *
 * @example
 * ```ts
 * maxRowsPerCall(undefined, "redis") // 5000
 * ```
 */
export function maxRowsPerCall(value: number | undefined, plugin: string): number {
  const n = value ?? 5000;
  if (!(Number.isInteger(n) && n >= 1)) throw new FreshetError("INVALID_CONFIG", `maxRowsPerCall ${String(value)} must be a whole number of at least 1`, { plugin, retriable: false });
  return n;
}

/**
 * One {@link WRITE_ROWS} call of several writes, each made by
 * {@link writeScriptArgs}: their parts in order. The reply holds each
 * part's counts in the same order ({@link decodeWriteReply}).
 *
 * @example
 * ```ts
 * const { keys, args } = groupScriptArgs([writeScriptArgs(rowsA, ttl, t, commitA), writeScriptArgs(rowsB, ttl, t)])
 * ```
 */
export function groupScriptArgs(calls: readonly { keys: string[]; args: string[] }[]): { keys: string[]; args: string[] } {
  if (calls.length === 1) return calls[0];
  const keys: string[] = [];
  const args: string[] = [String(calls.length)];
  // Element by element: linear in the group's size (a concat per call copies the whole so far), never a spread.
  for (const c of calls) {
    args.push(String(c.args.length - 1), String(c.keys.length)); // the part's extent, to step over it when it fails
    for (let i = 0; i < c.keys.length; i++) keys.push(c.keys[i]);
    for (let i = 1; i < c.args.length; i++) args.push(c.args[i]);
  }
  return { keys, args };
}

/**
 * Writes a batch, latest-wins per entity, and applies its commit, in one
 * call. For each row, in order: expired (not written) when ttl > 0 and
 * event time + ttl <= now; otherwise compared with the stored `_ts`/`_ct`
 * (a stored row that is itself expired counts as absent) and written only
 * when strictly newer, event time first, then created time, a missing
 * created time being less than any (core `isNewer`): the first of equals
 * wins, inside a batch and across batches. A written row replaces the
 * whole hash (HSET over it; the hash is rebuilt only when HLEN shows fields
 * the new row lacks) and expires at event time + ttl (PEXPIREAT; ttl 0: never).
 * Then each watermark is raised to at least its value, and the done key is
 * set to `d|{fingerprint}` for its ttl. Returns `{written, stale, expired}`
 * for each part, one after the other.
 *
 * Times are compared as Lua numbers (doubles), exact for epoch ms; they are
 * stored as the strings the client sent, never reformatted by Lua.
 */
export const WRITE_ROWS: LuaScript = script("freshet_write_rows", `
${RAISE_WATERMARK}
local function write_part(a, k)
  local ttl, now, nrows = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local last = k + nrows
  local written, stale, expired = 0, 0, 0
  while k < last do
    local nf = tonumber(ARGV[a])
    local f0 = a + 1
    local rows = tonumber(ARGV[f0 + nf])
    a = f0 + nf + 1
    for _ = 1, rows do
      local key = KEYS[k]
      local ts, ct = ARGV[a], ARGV[a + 1]
      local its = tonumber(ts)
      if ttl > 0 and its + ttl <= now then
        expired = expired + 1
      else
        local cur = redis.call('HMGET', key, '_ts', '_ct')
        local sts = tonumber(cur[1])
        local newer = true
        if sts and not (ttl > 0 and sts + ttl <= now) then
          if its ~= sts then
            newer = its > sts
          else
            local ict, sct = -math.huge, -math.huge
            if ct ~= '' then ict = tonumber(ct) end
            if cur[2] then sct = tonumber(cur[2]) end
            newer = ict > sct
          end
        end
        if newer then
          local h = {'_ts', ts}
          if ct ~= '' then h[3] = '_ct'; h[4] = ct end
          local j = #h
          for i = 0, nf - 1 do
            h[j + 1] = ARGV[f0 + i]
            h[j + 2] = ARGV[a + 2 + i]
            j = j + 2
          end
          local function put()
            if j <= 7000 then
              redis.call('HSET', key, unpack(h))
            else -- unpack is bounded by Lua's C stack (~8000 values): in slices of whole pairs
              for s = 1, j, 7000 do redis.call('HSET', key, unpack(h, s, math.min(s + 6999, j))) end
            end
          end
          put()
          -- HSET overwrote the fields the new row has; only when the old row had others (a feature now
          -- absent, a created time now missing) is the hash rebuilt. HLEN is O(1): no DEL in the common case.
          if cur[1] and redis.call('HLEN', key) > j / 2 then
            redis.call('DEL', key)
            put()
          end
          if ttl > 0 then redis.call('PEXPIREAT', key, string.format('%.0f', its + ttl)) end
          written = written + 1
        else
          stale = stale + 1
        end
      end
      a = a + 2 + nf
      k = k + 1
    end
  end
  local nwm = tonumber(ARGV[a])
  for i = 1, nwm do raise_watermark(KEYS[k + i - 1], ARGV[a + i]) end
  k = k + nwm
  a = a + nwm + 1
  if ARGV[a] == '1' then
    redis.call('SET', KEYS[k], 'd|' .. ARGV[a + 1], 'PX', ARGV[a + 2])
  end
  return written, stale, expired
end
local nparts = tonumber(ARGV[1])
if nparts == 1 then return {write_part(2, 1)} end
local out = {}
local a, k = 2, 1
for _ = 1, nparts do
  local na, nk = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local ok, w, s, e = pcall(write_part, a + 2, k)
  if ok then
    out[#out + 1] = w; out[#out + 1] = s; out[#out + 1] = e
  else -- this part alone fails; the error is a table {err = ...} from redis.call, or a Lua error's text
    local msg = type(w) == 'table' and (w.err or w.msg) or tostring(w)
    out[#out + 1] = -1; out[#out + 1] = string.gsub(tostring(msg), '^user_script:%d+: ', ''); out[#out + 1] = 0
  end
  a = a + 2 + na
  k = k + nk
end
return out
`);

/**
 * The counts of a {@link WRITE_ROWS} reply, or undefined when the reply is
 * not one; `part` picks a part of a group call (default the first).
 *
 * @example
 * ```ts
 * decodeWriteReply([3, 1, 0]) // { written: 3, stale: 1, expired: 0 }
 * decodeWriteReply([3, 1, 0, 1, 0, 0], 1) // { written: 1, stale: 0, expired: 0 }
 * ```
 */
export function decodeWriteReply(reply: unknown, part = 0): { written: number; stale: number; expired: number } | undefined {
  if (!Array.isArray(reply) || reply.length < 3 * part + 3) return undefined;
  const at = 3 * part;
  return { written: Number(reply[at]), stale: Number(reply[at + 1]), expired: Number(reply[at + 2]) };
}

/**
 * The error of one part of a group {@link WRITE_ROWS} call (`-1, message`
 * where its counts would be), or undefined when that part was applied.
 *
 * @example
 * ```ts
 * decodePartError([1, 0, 0, -1, "WRONGTYPE Operation against a key holding the wrong kind of value", 0], 1) // "WRONGTYPE ..."
 * ```
 */
export function decodePartError(reply: unknown, part: number): string | undefined {
  if (!Array.isArray(reply) || Number(reply[3 * part]) !== -1) return undefined;
  return String(reply[3 * part + 1]);
}

// ---- idempotency and watermarks ------------------------------------------

/**
 * Begins an idempotent delivery. KEYS: the idempotency key. ARGV:
 * fingerprint, token, pendingTtlMs. Returns `{"done", fingerprint}` or
 * `{"pending", fingerprint}` for a key that is held; otherwise sets
 * `p|{token}|{fingerprint}` PX pendingTtlMs and returns `{"started", token}`.
 * A retry of the same call (same token) that finds its own pending key is
 * "started" too, so a request retried after a lost answer is not taken for
 * a duplicate of itself.
 */
export const BEGIN: LuaScript = script("freshet_begin", `
local v = redis.call('GET', KEYS[1])
if v then
  local tag = string.sub(v, 1, 2)
  if tag == 'd|' then return {'done', string.sub(v, 3)} end
  local bar = tag == 'p|' and string.find(v, '|', 3, true)
  if bar then
    if string.sub(v, 3, bar - 1) == ARGV[2] then return {'started', ARGV[2]} end
    return {'pending', string.sub(v, bar + 1)}
  end
end
redis.call('SET', KEYS[1], 'p|' .. ARGV[2] .. '|' .. ARGV[1], 'PX', ARGV[3])
return {'started', ARGV[2]}
`);

/** Deletes the idempotency key KEYS[1] when it is pending and held by token ARGV[1]. Returns 1 when deleted. */
export const ABANDON: LuaScript = script("freshet_abandon", `
local v = redis.call('GET', KEYS[1])
local held = 'p|' .. ARGV[1] .. '|'
if v and string.sub(v, 1, #held) == held then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`);

/** Raises the watermark KEYS[1] to at least ARGV[1] (never lowers it). Returns the stored value, as a string. */
export const ADVANCE_WATERMARK: LuaScript = script("freshet_advance_watermark", `
${RAISE_WATERMARK}
return raise_watermark(KEYS[1], ARGV[1])
`);

// ---- checkpoints and leases ----------------------------------------------

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

// ---- aggregation tiles (see ./tiles.ts) ----------------------------------

/**
 * Reads whole hashes, one reply per key: what a fold merges into, with
 * each hash's version `_v`.
 *
 * ```
 * KEYS: hash x n    reply: { {field, value, ...} x n }
 * ```
 */
export const READ_HASHES: LuaScript = script("freshet_read_hashes", `
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
`);

/**
 * Reads the given fields of many hashes, one reply per key (the tiles of
 * the windows of a get-online-features request, in one round trip).
 *
 * ```
 * KEYS: hash x n    ARGV: field x m    reply: { {value or false} x m } x n
 * ```
 */
export const READ_FIELDS: LuaScript = script("freshet_read_fields", `
local out = {}
for i = 1, #KEYS do
  -- In slices: unpack() of thousands of fields would pass Lua's stack limit.
  local vals = {}
  for from = 1, #ARGV, 1000 do
    local part = redis.call('HMGET', KEYS[i], unpack(ARGV, from, math.min(#ARGV, from + 999)))
    for j = 1, #part do vals[#vals + 1] = part[j] end
  end
  out[i] = vals
end
return out
`);

/**
 * One fold of an aggregation view: checks the applied marks, then the
 * version of every entity hash read before the merge, then writes the
 * merged tiles, the marks, the watermarks and the done key. All or nothing.
 *
 * ```
 * KEYS: mark x nM, watermark x nW, entity hash x nE, [doneKey]
 * ARGV: nM, nW, nE, hasDone ("1" or "0"), doneFingerprint, doneTtlMs,
 *       (expected ("-" none, "=" .. mark), position) x nM,
 *       watermark x nW,
 *       (version ("" none), pexpireat ("" = persist), nSet, (field, value) x nSet, nDel, field x nDel) x nE
 * reply: {1, tiles} applied | {0, ("-" or "=" .. mark) x nM} a mark moved | {-1} a hash changed: read again
 * ```
 */
export const FOLD_TILES: LuaScript = script("freshet_fold_tiles", RAISE_WATERMARK + `
local nM, nW, nE = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hasDone, fp, fpTtl = ARGV[4] == '1', ARGV[5], ARGV[6]
local a = 7
local moved = false
for i = 1, nM do
  local cur = redis.call('GET', KEYS[i])
  local want = ARGV[a]
  if (want == '-' and cur) or (want ~= '-' and (not cur or '=' .. cur ~= want)) then moved = true end
  a = a + 2
end
if moved then
  local out = {0}
  for i = 1, nM do
    local cur = redis.call('GET', KEYS[i])
    out[#out + 1] = cur and ('=' .. cur) or '-'
  end
  return out
end
local wmAt = a
a = a + nW
local segs = {}
for e = 1, nE do
  local key = KEYS[nM + nW + e]
  local ver = ARGV[a]
  local cur = redis.call('HGET', key, '_v')
  if (ver == '' and cur) or (ver ~= '' and cur ~= ver) then return {-1} end
  segs[e] = a
  local nSet = tonumber(ARGV[a + 2])
  a = a + 3 + 2 * nSet
  a = a + 1 + tonumber(ARGV[a])
end
local tiles = 0
for e = 1, nE do
  local key = KEYS[nM + nW + e]
  local b = segs[e]
  local exp = ARGV[b + 1]
  local nSet = tonumber(ARGV[b + 2])
  b = b + 3
  for j = 1, nSet do
    redis.call('HSET', key, ARGV[b], ARGV[b + 1])
    b = b + 2
  end
  tiles = tiles + nSet
  local nDel = tonumber(ARGV[b])
  for j = 1, nDel do redis.call('HDEL', key, ARGV[b + j]) end
  redis.call('HINCRBY', key, '_v', 1)
  if exp == '' then redis.call('PERSIST', key) else redis.call('PEXPIREAT', key, exp) end
end
for i = 1, nM do redis.call('SET', KEYS[i], ARGV[7 + 2 * (i - 1) + 1]) end
for i = 1, nW do raise_watermark(KEYS[nM + i], ARGV[wmAt + i - 1]) end
if hasDone then redis.call('SET', KEYS[nM + nW + nE + 1], 'd|' .. fp, 'PX', fpTtl) end
return {1, tiles}
`);

/**
 * Deletes the tiles of one entity hash that lie wholly inside [start, end)
 * (fields `slide:index` with slide > 0), and bumps its version.
 *
 * ```
 * KEYS: hash    ARGV: start, end, "1" to delete the lifetime tile too    reply: fields deleted
 * ```
 */
export const CLEAR_TILES: LuaScript = script("freshet_clear_tiles", `
local s, e, all = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
if all and redis.call('HDEL', KEYS[1], '0:0') == 1 then redis.call('HINCRBY', KEYS[1], '_v', 1) end
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local slide, index = string.match(f, '^(%d+):(%-?%d+)$')
  if slide then
    slide, index = tonumber(slide), tonumber(index)
    if slide > 0 and index * slide >= s and (index + 1) * slide <= e then
      redis.call('HDEL', KEYS[1], f)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], '_v', 1) end
return n
`);

/** Every script, for SCRIPT LOAD or a check that EVALSHA will find them. */
export const REDIS_SCRIPTS: readonly LuaScript[] = [WRITE_ROWS, BEGIN, ABANDON, ADVANCE_WATERMARK, SET_CHECKPOINT, ACQUIRE_LEASE, RELEASE_LEASE, LIST_LEASES, READ_HASHES, READ_FIELDS, FOLD_TILES, CLEAR_TILES];

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

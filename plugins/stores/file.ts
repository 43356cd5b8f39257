/**
 * @module
 * The default store: online values, an offline log and dead letters in plain
 * files under one directory.
 *
 * ```
 * <dir>/online/<view>.json    latest value per entity, one file per view
 * <dir>/meta.json             idempotency claims, checkpoints, leases
 * <dir>/offline/<view>.jsonl  the offline log, one JSON object per line
 * ```
 *
 * Limits: one process owns a directory (two fileStore() calls on the same
 * directory in one process share one state; two processes would overwrite
 * each other). The whole view file is rewritten on each flush and the whole
 * view is held in memory, so this suits up to some hundred thousand entities
 * per view; beyond that, or with several workers, use Redis.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import {
  type DeadLetter,
  type DeadLetterSink,
  entityKeyOf,
  type FeatureRow,
  type FeatureValue,
  type FeatureView,
  featureValue,
  FreshetError,
  localMeta,
  type LocalMetaState,
  type MetaStore,
  type OfflineStore,
  type OnlineStore,
  parseEntityKey,
  parseEventTime,
  type Row,
  storeUnavailable,
  supersedes,
  toIso,
  type WriteResult,
} from "../../core/index.ts";

const PLUGIN = "file";

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
  /** The directory that holds the store; created when missing. */
  dir: string;
  /** The clock, for ttl tests. Default `Date.now`. */
  now?: () => number;
  /**
   * How long a flush waits after the first write that needs it, to gather
   * more writes into the same file rewrite, in ms. Default 0: a flush starts
   * at once, and the writes that arrive while it runs share the next one.
   */
  flushMs?: number;
}

/** One entity's stored row. */
interface Entry {
  values: Row;
  eventTime: number;
  createdTime?: number;
  /** Epoch ms when the key expires (write time + ttl); absent means never. */
  expiresAt?: number;
}

/** A view's entities in memory and the state of its file. */
interface ViewFile {
  entries: Map<string, Entry>;
  /** Each entity's serialized line, kept between flushes so that a flush only serializes what changed. */
  lines: Map<string, string>;
  /** Bumped on every change; `durable` is the last one on disk. */
  gen: number;
  durable: number;
  commit: GroupCommit;
}

/**
 * Runs `flush` at most once at a time. Callers that arrive while a flush
 * runs share the next one (group commit), so N concurrent writes cost about
 * two file rewrites, not N.
 */
class GroupCommit {
  #next?: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  #draining?: Promise<void>;
  readonly #flush: () => Promise<void>;
  readonly #lingerMs: number;

  constructor(flush: () => Promise<void>, lingerMs = 0) {
    this.#flush = flush;
    this.#lingerMs = lingerMs;
  }

  /** Resolves after a flush that started after this call has finished. */
  request(): Promise<void> {
    if (!this.#next) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.#next = { promise, resolve, reject };
      this.#draining ??= this.#drain();
    }
    return this.#next.promise;
  }

  /** Resolves when no flush is running or queued. */
  async idle(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#next) {
        // Let the writers of this tick (or of flushMs) join before the snapshot is taken.
        await (this.#lingerMs > 0 ? new Promise((r) => setTimeout(r, this.#lingerMs)) : Promise.resolve());
        const batch = this.#next;
        this.#next = undefined;
        try {
          await this.#flush();
          batch.resolve();
        } catch (e) {
          batch.reject(e);
        }
      }
    } finally {
      this.#draining = undefined;
    }
  }
}

let tmpCounter = 0;

/**
 * Replaces `path` with `text` atomically: writes a temp file beside it,
 * fsyncs it, renames it over the target and fsyncs the directory. A reader
 * (or a restart after a crash) sees the old file or the new one, never half.
 */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${(++tmpCounter).toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`;
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  await syncDir(dirname(path));
}

/** Makes a rename durable. Not every platform can fsync a directory (Windows); there it is skipped. */
async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch {
    // best effort
  } finally {
    await fh?.close().catch(() => {});
  }
}

/** Reads a JSON file, or undefined when it does not exist. */
async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as { code?: string })?.code === "ENOENT") return undefined;
    throw storeUnavailable(PLUGIN, e);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FreshetError("STORE_UNAVAILABLE", `${path} (${what}) is not valid JSON: ${(e as Error).message}; restore it, or delete it to start empty`, { plugin: PLUGIN, retriable: false, cause: e });
  }
}

/** Removes temp files a crash left behind; they were never renamed, so they hold nothing that counts. */
async function removeLeftoverTemps(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(names.filter((n) => /\.json\.[a-z0-9]+\.tmp$/.test(n)).map((n) => rm(join(dir, n), { force: true }).catch(() => {})));
}

const viewFileName = (view: string) => `${encodeURIComponent(view)}.json`;

/** The state of one directory, shared by every fileStore() opened on it in this process. */
class FileDir {
  refs = 0;
  failed = false;
  readonly dir: string;
  readonly now: () => number;
  readonly flushMs: number;
  readonly meta: LocalMetaState = { claims: {}, checkpoints: {}, leases: {} };
  readonly ready: Promise<void>;
  readonly #views = new Map<string, Promise<ViewFile>>();
  readonly #metaCommit: GroupCommit;

  constructor(dir: string, now: () => number, flushMs: number) {
    this.dir = dir;
    this.now = now;
    this.flushMs = flushMs;
    this.#metaCommit = new GroupCommit(() => this.#flushMeta(), flushMs);
    this.ready = this.#open();
    // Surfaced on first use; a later fileStore() on this directory tries again.
    this.ready.catch(() => void (this.failed = true));
  }

  async #open(): Promise<void> {
    try {
      await mkdir(join(this.dir, "online"), { recursive: true });
    } catch (e) {
      throw storeUnavailable(PLUGIN, e);
    }
    await Promise.all([removeLeftoverTemps(this.dir), removeLeftoverTemps(join(this.dir, "online"))]);
    const saved = await readJson(join(this.dir, "meta.json"), "meta state") as Partial<LocalMetaState> | undefined;
    Object.assign(this.meta.claims, saved?.claims);
    Object.assign(this.meta.checkpoints, saved?.checkpoints);
    Object.assign(this.meta.leases, saved?.leases);
  }

  view(name: string): Promise<ViewFile> {
    let vf = this.#views.get(name);
    if (!vf) {
      vf = this.#loadView(name);
      this.#views.set(name, vf);
      // A failed load is retried on the next call rather than cached.
      vf.catch(() => this.#views.delete(name));
    }
    return vf;
  }

  async #loadView(name: string): Promise<ViewFile> {
    await this.ready;
    const path = join(this.dir, "online", viewFileName(name));
    const saved = await readJson(path, `online values of view "${name}"`) as { entities?: Record<string, Entry> } | undefined;
    const entries = new Map<string, Entry>(Object.entries(saved?.entities ?? {}));
    const vf: ViewFile = { entries, lines: new Map(), gen: 0, durable: 0, commit: undefined as unknown as GroupCommit };
    vf.commit = new GroupCommit(() => this.#flushView(path, vf), this.flushMs);
    return vf;
  }

  async #flushView(path: string, vf: ViewFile): Promise<void> {
    const gen = vf.gen;
    const t = this.now();
    // One entity per line: still one JSON document, but readable and diffable.
    const lines: string[] = [];
    for (const [key, e] of vf.entries) {
      if (e.expiresAt !== undefined && e.expiresAt <= t) {
        vf.entries.delete(key);
        vf.lines.delete(key);
        continue;
      }
      let line = vf.lines.get(key);
      if (line === undefined) vf.lines.set(key, line = `${JSON.stringify(key)}:${JSON.stringify(e)}`);
      lines.push(line);
    }
    await writeAtomic(path, `{"format":"freshet-online/1","entities":{\n${lines.join(",\n")}\n}}\n`);
    if (gen > vf.durable) vf.durable = gen;
  }

  async #flushMeta(): Promise<void> {
    const t = this.now();
    for (const [k, exp] of Object.entries(this.meta.claims)) if (exp <= t) delete this.meta.claims[k];
    await writeAtomic(join(this.dir, "meta.json"), JSON.stringify({ format: "freshet-meta/1", ...this.meta }) + "\n");
  }

  persistMeta = async (): Promise<void> => {
    try {
      await this.#metaCommit.request();
    } catch (e) {
      throw storeUnavailable(PLUGIN, e);
    }
  };

  async idle(): Promise<void> {
    await this.#metaCommit.idle();
    for (const vf of this.#views.values()) await (await vf.catch(() => undefined))?.commit.idle();
  }
}

/** Open directories of this process, by resolved path. */
const openDirs = new Map<string, FileDir>();

/** A MetaStore whose methods wait for meta.json to be loaded first. */
function metaAfter(ready: Promise<void>, meta: MetaStore): MetaStore {
  const wrap = <A extends unknown[], R>(f: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
    await ready;
    return f(...a);
  };
  return {
    claim: wrap(meta.claim),
    unclaim: wrap(meta.unclaim),
    getCheckpoint: wrap(meta.getCheckpoint),
    setCheckpoint: wrap(meta.setCheckpoint),
    acquireLease: wrap(meta.acquireLease),
    releaseLease: wrap(meta.releaseLease),
    listLeases: wrap(meta.listLeases),
  };
}

/**
 * The default online store: the latest row per entity in one JSON file per
 * view, written atomically (temp file, fsync, rename). It survives a restart:
 * a new fileStore on the same directory reads what was there.
 *
 * A write resolves only once its rows (and any earlier rows of that view)
 * are on disk, since the processor acknowledges the source after it. Writes
 * that arrive while a view's file is being rewritten share the next rewrite
 * (group commit), so the cost is per flush, not per row or per batch.
 *
 * Limits: one process per directory; a second fileStore() on the same
 * directory in the same process shares the first one's state, clock and
 * flushMs (close each; the last close releases it). Each flush rewrites the
 * whole view file, so for large entity counts use Redis.
 *
 * @example
 * ```ts
 * const store = fileStore({ dir: ".freshet" })
 * await store.write(view, rows)
 * const [values] = await store.read(view, ["driver_id=1001"], ["conv_rate"])
 * ```
 */
export function fileStore(opts: FileStoreOptions): OnlineStore {
  if (!opts || typeof opts.dir !== "string" || !opts.dir) {
    throw new FreshetError("INVALID_CONFIG", 'dir is required, e.g. fileStore({ dir: ".freshet" })', { plugin: PLUGIN });
  }
  const path = resolve(opts.dir);
  let fd = openDirs.get(path);
  if (!fd || fd.failed) {
    fd = new FileDir(path, opts.now ?? Date.now, opts.flushMs ?? 0);
    openDirs.set(path, fd);
  }
  const dir = fd;
  dir.refs++;
  const now = dir.now;
  let closed = false;
  const live = (e: Entry | undefined, t: number) => (e && (e.expiresAt === undefined || e.expiresAt > t) ? e : undefined);
  const ensureOpen = (view: FeatureView) => {
    if (closed) throw new FreshetError("INVALID_CONFIG", "the file store is closed", { plugin: PLUGIN, definition: view.name });
  };
  return {
    name: "file",
    meta: metaAfter(dir.ready, localMeta(dir.meta, now, dir.persistMeta)),
    async write(view: FeatureView, rows: FeatureRow[]): Promise<WriteResult> {
      ensureOpen(view);
      const vf = await dir.view(view.name);
      // Runs to completion without awaiting, so latest-wins is atomic in this process.
      const t = now();
      let written = 0;
      for (const row of rows) {
        if (!supersedes(row, live(vf.entries.get(row.entityKey), t))) continue;
        const e: Entry = { values: { ...row.values }, eventTime: row.eventTime };
        if (row.createdTime !== undefined) e.createdTime = row.createdTime;
        if (view.ttlMs > 0) e.expiresAt = t + view.ttlMs;
        vf.entries.set(row.entityKey, e);
        vf.lines.delete(row.entityKey);
        written++;
      }
      if (written) vf.gen++;
      // Also wait when only stale rows came but earlier changes are not on disk yet:
      // those rows may be this caller's own retry, and it will ack after we resolve.
      if (vf.durable < vf.gen) {
        try {
          await vf.commit.request();
        } catch (e) {
          throw storeUnavailable(PLUGIN, e, view.name);
        }
      }
      return { written, stale: rows.length - written };
    },
    async read(view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> {
      ensureOpen(view);
      const vf = await dir.view(view.name);
      const t = now();
      return entityKeys.map((ek) => {
        const e = live(vf.entries.get(ek), t);
        return Object.fromEntries(features.map((f) => [f, featureValue(view, e, f, t)]));
      });
    },
    async ping(): Promise<void> {
      try {
        await dir.ready;
        await stat(join(dir.dir, "online"));
      } catch (e) {
        throw storeUnavailable(PLUGIN, e);
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await dir.idle();
      if (--dir.refs === 0 && openDirs.get(path) === dir) openDirs.delete(path);
    },
  };
}

/** Options of {@link fileOffline}. */
export interface FileOfflineOptions {
  /** The directory; the log of a view goes to `<dir>/offline/<view>.jsonl`. */
  dir: string;
  /** Rows per chunk yielded by `read`. Default 1000. */
  chunkSize?: number;
}

/**
 * Appends lines to a file, durably, with group commit: lines that arrive
 * during an append go out together in the next one.
 */
function appender(path: string): { append(text: string): Promise<void>; idle(): Promise<void> } {
  let pending: string[] = [];
  let checked = false;
  const commit = new GroupCommit(async () => {
    const text = pending.join("");
    pending = [];
    if (!text) return;
    await mkdir(dirname(path), { recursive: true });
    const fh = await open(path, "a+");
    try {
      let prefix = "";
      if (!checked) {
        // A crash mid-append may have left a torn last line: start on a fresh one.
        const { size } = await fh.stat();
        if (size > 0) {
          const last = new Uint8Array(1);
          await fh.read(last, 0, 1, size - 1);
          if (last[0] !== 10) prefix = "\n";
        }
        checked = true;
      }
      await fh.writeFile(prefix + text);
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
  return {
    append(text) {
      pending.push(text);
      return commit.request();
    },
    idle: () => commit.idle(),
  };
}

/** Reads a file as blocks of whole lines (without their line breaks), without loading it all. */
async function* readLineBlocks(path: string): AsyncGenerator<string[]> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if ((e as { code?: string })?.code === "ENOENT") return;
    throw e;
  }
  try {
    const buf = new Uint8Array(1 << 16);
    const decoder = new TextDecoder();
    let rest = "";
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      const lines = (rest + decoder.decode(buf.subarray(0, bytesRead), { stream: true })).split("\n");
      rest = lines.pop()!;
      if (lines.length) yield lines;
    }
    rest += decoder.decode();
    if (rest) yield [rest];
  } finally {
    await fh.close();
  }
}

/** Turns a join key's string back into a number when the view's schema says it is one. */
function joinKeyValues(view: FeatureView, entityKey: string): Row {
  const out: Row = parseEntityKey(entityKey);
  for (const k of view.joinKeys) {
    const type = (view.schema.entries?.[k] as { type?: string } | undefined)?.type;
    const s = out[k];
    if (type === "number" && typeof s === "string" && s !== "" && String(Number(s)) === s) out[k] = Number(s);
  }
  return out;
}

/**
 * An offline store of JSON Lines, one file per view
 * (`<dir>/offline/<view>.jsonl`). Each row is one object: the join keys,
 * the feature values, `event_timestamp` and `created` (ISO 8601; `created`
 * is the row's created time, or the time it was appended). An append
 * resolves once the lines are on disk. `read` streams a file back in
 * chunks, skipping a torn last line.
 *
 * @example
 * ```ts
 * const log = fileOffline({ dir: ".freshet" })
 * for await (const rows of log.read(view, { start: Date.parse("2024-01-01") })) console.log(rows.length)
 * ```
 */
export function fileOffline(opts: FileOfflineOptions): OfflineStore {
  if (!opts || typeof opts.dir !== "string" || !opts.dir) {
    throw new FreshetError("INVALID_CONFIG", 'dir is required, e.g. fileOffline({ dir: ".freshet" })', { plugin: PLUGIN });
  }
  const root = join(resolve(opts.dir), "offline");
  const chunkSize = opts.chunkSize ?? 1000;
  const files = new Map<string, ReturnType<typeof appender>>();
  const pathOf = (view: FeatureView) => join(root, `${encodeURIComponent(view.name)}.jsonl`);
  return {
    name: "file-offline",
    async append(view, rows) {
      if (!rows.length) return;
      const created = toIso(Date.now());
      let text = "";
      for (const r of rows) {
        text += JSON.stringify({
          ...joinKeyValues(view, r.entityKey),
          ...r.values,
          event_timestamp: toIso(r.eventTime),
          created: r.createdTime !== undefined ? toIso(r.createdTime) : created,
        }) + "\n";
      }
      const path = pathOf(view);
      let file = files.get(path);
      if (!file) files.set(path, file = appender(path));
      try {
        await file.append(text);
      } catch (e) {
        throw storeUnavailable("file-offline", e, view.name);
      }
    },
    async *read(view, range) {
      const start = range.start ?? -Infinity;
      const end = range.end ?? Infinity;
      const known = new Set([...view.joinKeys, "event_timestamp", "created"]);
      let chunk: FeatureRow[] = [];
      for await (const lines of readLineBlocks(pathOf(view))) {
        for (const line of lines) {
          if (!line.trim()) continue;
          let obj: Row;
          try {
            obj = JSON.parse(line);
          } catch {
            continue; // a torn line from a crash
          }
          const eventTime = parseEventTime(obj.event_timestamp);
          if (eventTime === undefined || eventTime < start || eventTime >= end) continue;
          const ek = entityKeyOf(view.joinKeys, obj);
          if ("missing" in ek) continue;
          const values: Row = {};
          for (const [k, v] of Object.entries(obj)) if (!known.has(k)) values[k] = v;
          chunk.push({ entityKey: ek.key, values, eventTime, createdTime: parseEventTime(obj.created) });
          if (chunk.length >= chunkSize) {
            yield chunk;
            chunk = [];
          }
        }
      }
      if (chunk.length) yield chunk;
    },
    async close() {
      for (const f of files.values()) await f.idle();
    },
  };
}

/**
 * A dead-letter sink that appends each letter as one JSON line to `path`,
 * creating its directory. A write resolves only once the lines are on disk.
 *
 * @example
 * ```ts
 * const deadLetters = fileDeadLetters(".freshet/dead-letters.jsonl")
 * ```
 */
export function fileDeadLetters(path: string): DeadLetterSink {
  if (typeof path !== "string" || !path) {
    throw new FreshetError("INVALID_CONFIG", 'a path is required, e.g. fileDeadLetters(".freshet/dead-letters.jsonl")', { plugin: PLUGIN });
  }
  const file = appender(resolve(path));
  return {
    name: "file",
    async write(letters: DeadLetter[]): Promise<void> {
      if (!letters.length) return;
      try {
        await file.append(letters.map((l) => JSON.stringify(l) + "\n").join(""));
      } catch (e) {
        throw storeUnavailable("file-dead-letters", e);
      }
    },
    close: () => file.idle(),
  };
}

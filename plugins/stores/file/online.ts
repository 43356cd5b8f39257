/**
 * @module
 * The default online store: the local engine's state in memory, made
 * durable by an append log in the store directory.
 */
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import {
  type CommitMeta,
  type FeatureRow,
  type FeatureValue,
  type FeatureView,
  FreshetError,
  type LocalEngine,
  localEngine,
  type MetaStore,
  type OnlineStore,
  type WriteResult,
} from "../../../core/index.ts";
import { type DirLock, lockDir } from "./lock.ts";
import { StateLog } from "./log.ts";

const PLUGIN = "file";

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
  /** The directory that holds the store; created when missing. */
  dir: string;
  /** The clock, for ttl tests. Default `Date.now`. */
  now?: () => number;
  /**
   * The log is compacted into a new snapshot once it is larger than this
   * many bytes and larger than the last snapshot. Default 16 MiB.
   */
  compactBytes?: number;
}

/** The file store: an {@link OnlineStore} that can also be compacted on demand. */
export interface FileStore extends OnlineStore {
  /** The resolved directory. */
  readonly dir: string;
  /** Writes a snapshot now and starts a fresh log (otherwise done as the log grows). */
  compact(): Promise<void>;
}

/** The state of one directory, shared by every fileStore() opened on it in this process. */
class FileDir {
  refs = 0;
  readonly path: string;
  readonly engine: LocalEngine;
  readonly log: StateLog;
  readonly #lock: DirLock;
  readonly #now: () => number;
  #compacting = false;

  constructor(path: string, now: () => number, compactBytes: number) {
    this.path = path;
    this.#now = now;
    try {
      mkdirSync(path, { recursive: true });
    } catch (e) {
      throw new FreshetError("INVALID_CONFIG", `cannot create the store directory ${path}: ${(e as Error).message}`, { plugin: PLUGIN, retriable: false, cause: e });
    }
    this.#lock = lockDir(path);
    try {
      const { log, state } = StateLog.open(path, { compactBytes });
      this.log = log;
      this.engine = localEngine({
        state,
        now,
        plugin: PLUGIN,
        persist: async (changes) => {
          await log.append(changes);
          if (log.needsCompaction()) this.#scheduleCompaction();
        },
      });
    } catch (e) {
      this.#lock.release();
      throw e;
    }
    if (this.log.needsCompaction()) this.#scheduleCompaction();
  }

  compact(): Promise<void> {
    return this.engine.exclusive(() => this.log.compact(this.engine.state, this.#now()));
  }

  #scheduleCompaction(): void {
    if (this.#compacting) return;
    this.#compacting = true;
    // Not awaited: it runs after the groups already queued, and a failure
    // leaves the old log in place (StateLog retries after more growth).
    this.compact().catch(() => {}).finally(() => (this.#compacting = false));
  }

  /** Closes the log and releases the lock; the caller has waited for the engine to be idle. */
  async close(): Promise<void> {
    const closing = this.log.close(); // stops appends at once
    this.#lock.release();
    await closing;
  }
}

/** Open directories of this process, by resolved path. */
const openDirs = new Map<string, FileDir>();

/**
 * The default online store: every write is appended as one line to
 * `<dir>/state.log` and fdatasynced before it is applied and acknowledged
 * (writes that arrive meanwhile share the next append: group commit), so a
 * write costs the same at 1k or 1M entities. Reads come from memory. The log
 * is compacted into `<dir>/state.snapshot` as it grows.
 *
 * Opening is synchronous and strict: it throws a non-retriable FreshetError
 * when another process holds the directory (naming it) or when a state file
 * is unreadable or from a newer freshet (naming the file and how to
 * recover). A torn last log line from a crash is dropped. A directory of
 * the previous file store (`online/<view>.json`, `meta.json`) is migrated
 * once.
 *
 * Limits: one process per directory (use Redis for several); the whole
 * state is held in memory. A second fileStore() on the same directory in
 * the same process shares the first one's state and clock (close each; the
 * last close releases the directory).
 *
 * @example
 * ```ts
 * const store = fileStore({ dir: ".freshet" })
 * await store.write(view, rows)
 * const [values] = await store.read(view, ["driver_id=1001"], ["conv_rate"])
 * ```
 */
export function fileStore(opts: FileStoreOptions): FileStore {
  if (!opts || typeof opts.dir !== "string" || !opts.dir) {
    throw new FreshetError("INVALID_CONFIG", 'dir is required, e.g. fileStore({ dir: ".freshet" })', { plugin: PLUGIN });
  }
  const path = resolve(opts.dir);
  let dir = openDirs.get(path);
  if (!dir) {
    dir = new FileDir(path, opts.now ?? Date.now, opts.compactBytes ?? 16 << 20);
    openDirs.set(path, dir);
  }
  const shared = dir;
  shared.refs++;
  const { engine } = shared;
  let closed = false;
  const closedError = () => new FreshetError("INVALID_CONFIG", `the file store on ${path} is closed`, { plugin: PLUGIN, retriable: false });
  const guard = <A extends unknown[], R>(f: (...a: A) => Promise<R>) => (...a: A): Promise<R> => (closed ? Promise.reject(closedError()) : f(...a));
  const meta = Object.fromEntries(Object.entries(engine.meta).map(([k, f]) => [k, guard(f as (...a: unknown[]) => Promise<unknown>)])) as unknown as MetaStore;
  return {
    name: "file",
    dir: path,
    meta,
    write: guard((view: FeatureView, rows: FeatureRow[], commit?: CommitMeta): Promise<WriteResult> => engine.write(view, rows, commit)),
    read: guard((view: FeatureView, entityKeys: string[], features: string[]): Promise<Record<string, FeatureValue>[]> => Promise.resolve(engine.read(view, entityKeys, features))),
    ping: guard(() => shared.log.check()),
    compact: guard(() => shared.compact()),
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      shared.refs--;
      await engine.idle();
      // The last close releases the directory, unless it was opened again meanwhile.
      if (shared.refs > 0 || openDirs.get(path) !== shared) return;
      openDirs.delete(path);
      await shared.close();
    },
  };
}

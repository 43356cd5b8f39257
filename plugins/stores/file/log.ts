/**
 * @module
 * The durable state of a file store: a snapshot and an append log of
 * changes, replayed on open and compacted into a new snapshot as the log
 * grows.
 *
 * ```
 * state.snapshot  {"format":"freshet-snapshot","version":1,"seq":S}   header
 *                 {"t":"row","view":...,"key":...,"entry":{...}}      one change per line
 *                 {"end":"freshet-snapshot","count":N}                trailer: the file is whole
 * state.log       {"format":"freshet-log","version":1,"base":B}       header: follows the snapshot of seq B
 *                 {"seq":B+1,"c":[changes]}                           one line per persisted group
 * ```
 *
 * Open loads the snapshot, then replays the log lines with a greater seq
 * (see `replay.ts`).
 * Compaction writes a new snapshot (temp file, fsync, rename, fsync dir),
 * then swaps in a fresh log the same way; a crash between the two leaves a
 * snapshot that covers every line of the old log, which replay skips.
 */
import {
  close as fsClose,
  closeSync,
  fdatasync,
  fstat,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncate,
  ftruncateSync,
  open as fsOpen,
  openSync,
  readdirSync,
  renameSync,
  unlinkSync,
  write as fsWrite,
  writeSync,
} from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { FreshetError, type LocalChange, type LocalState } from "../../../core/index.ts";
import { legacyPaths, moveLegacyAway, readLegacy } from "./migrate.ts";
import { checkChange, exists, FORMAT_VERSION, loadState, LOG_FILE, SNAPSHOT_FILE } from "./replay.ts";

const PLUGIN = "file";
const encoder = new TextEncoder();

// ---- writing ------------------------------------------------------------------

const logHeader = (base: number) => JSON.stringify({ format: "freshet-log", version: FORMAT_VERSION, base }) + "\n";
const tempName = (path: string) => `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;

const call = <T>(f: (cb: (e: Error | null, v: T) => void) => void) => new Promise<T>((res, rej) => f((e, v) => (e ? rej(e) : res(v))));

/** Writes all of `bytes` at `position` (or at the end, for an append-mode fd), across short writes. */
async function writeAll(fd: number, bytes: Uint8Array, position: number | null): Promise<void> {
  let off = 0;
  while (off < bytes.length) {
    const n = await call<number>((cb) => fsWrite(fd, bytes, off, bytes.length - off, position === null ? null : position + off, cb));
    if (!(n > 0)) throw new Error(`short write (${off} of ${bytes.length} bytes)`);
    off += n;
  }
}

/** Makes a rename durable. Not every platform can fsync a directory; there it is skipped. */
async function syncDir(dir: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = await call<number>((cb) => fsOpen(dir, "r", cb));
    await call<void>((cb) => fsync(fd!, (e) => cb(e, undefined)));
  } catch {
    // best effort
  } finally {
    if (fd !== undefined) await call<void>((cb) => fsClose(fd!, (e) => cb(e, undefined))).catch(() => {});
  }
}

function syncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // best effort
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Replaces `path` atomically with `text`, synchronously (at open only). */
function writeAtomicSync(dir: string, path: string, text: string): void {
  const tmp = tempName(path);
  const bytes = encoder.encode(text);
  const fd = openSync(tmp, "w");
  try {
    for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      // closed already
    }
    try {
      unlinkSync(tmp);
    } catch {
      // never created, or renamed
    }
    throw e;
  }
  syncDirSync(dir);
}

/** Removes temp files a crash left behind; they were never renamed into place, so they hold nothing that counts. */
function removeTemps(dir: string): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith(`${SNAPSHOT_FILE}.tmp-`) || name.startsWith(`${LOG_FILE}.tmp-`)) {
      try {
        unlinkSync(join(dir, name));
      } catch {
        // gone already
      }
    }
  }
}

/** Options of {@link StateLog.open}. */
export interface StateLogOptions {
  /** The log is compacted once it is larger than this and than the last snapshot, in bytes. */
  compactBytes: number;
}

const codeMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * The open snapshot and log of one store directory (the caller holds its
 * lock). `append` makes a group of changes durable; `compact` rewrites the
 * snapshot from the state and starts a fresh log.
 */
export class StateLog {
  readonly dir: string;
  readonly logPath: string;
  readonly snapshotPath: string;
  readonly #compactBytes: number;
  #fd: number;
  #ino: number;
  #dev: number;
  /** Bytes of the log that hold whole, acknowledged lines. */
  #size: number;
  #headerBytes: number;
  #seq: number;
  #snapshotBytes: number;
  #compactAt: number;
  /** Set while an append or a compaction runs; `#gen` counts them. */
  #busy = false;
  #gen = 0;
  /** An append failed and its partial line could not be cut off yet. */
  #repair?: unknown;
  /** The log can no longer be trusted: every append and ping fails. */
  #broken?: FreshetError;
  #closed = false;

  private constructor(dir: string, fd: number, size: number, headerBytes: number, seq: number, snapshotBytes: number, opts: StateLogOptions) {
    this.dir = dir;
    this.logPath = join(dir, LOG_FILE);
    this.snapshotPath = join(dir, SNAPSHOT_FILE);
    this.#compactBytes = opts.compactBytes;
    this.#fd = fd;
    const st = fstatSync(fd);
    this.#ino = st.ino;
    this.#dev = st.dev;
    this.#size = size;
    this.#headerBytes = headerBytes;
    this.#seq = seq;
    this.#snapshotBytes = snapshotBytes;
    this.#compactAt = this.#threshold();
  }

  /**
   * Opens the state of `dir`, synchronously: migrates a directory of the
   * previous file store once, loads the snapshot and the log, cuts off a
   * torn last line, and opens the log for appending.
   */
  static open(dir: string, opts: StateLogOptions): { log: StateLog; state: LocalState } {
    try {
      return StateLog.#open(dir, opts);
    } catch (e) {
      if (e instanceof FreshetError) throw e;
      throw new FreshetError("STORE_UNAVAILABLE", `cannot open the file store in ${dir}: ${codeMessage(e)}`, { plugin: PLUGIN, retriable: true, cause: e });
    }
  }

  static #open(dir: string, opts: StateLogOptions): { log: StateLog; state: LocalState } {
    const logPath = join(dir, LOG_FILE);
    removeTemps(dir);
    if (!exists(join(dir, SNAPSHOT_FILE)) && !exists(logPath)) {
      const legacy = readLegacy(dir, checkChange);
      // The migrated state is the first entry of the new log; only then are the old files moved away.
      writeAtomicSync(dir, logPath, logHeader(0) + (legacy?.length ? JSON.stringify({ seq: 1, c: legacy }) + "\n" : ""));
    }
    if (legacyPaths(dir).length) moveLegacyAway(dir);
    const loaded = loadState(dir);
    if (!loaded.log) {
      // A snapshot without a log: the log was moved away to recover. Start a fresh one after it.
      writeAtomicSync(dir, logPath, logHeader(loaded.seq));
    }
    const fd = openSync(logPath, "a");
    const headerBytes = loaded.log?.headerBytes ?? encoder.encode(logHeader(loaded.seq)).length;
    const size = loaded.log?.goodBytes ?? headerBytes;
    try {
      if (loaded.log && loaded.log.size > size) {
        // Cut the torn tail off, so that the next append starts on a fresh line.
        ftruncateSync(fd, size);
        fsyncSync(fd);
      }
    } catch (e) {
      closeSync(fd);
      throw new FreshetError("INVALID_CONFIG", `cannot cut the torn last line off ${logPath}: ${codeMessage(e)}`, { plugin: PLUGIN, retriable: false, cause: e });
    }
    return { log: new StateLog(dir, fd, size, headerBytes, loaded.seq, loaded.snapshotBytes, opts), state: loaded.state };
  }

  #threshold(): number {
    return this.#headerBytes + Math.max(this.#compactBytes, this.#snapshotBytes);
  }

  /** Whether the log has grown enough to be compacted. */
  needsCompaction(): boolean {
    return !this.#broken && this.#size > this.#compactAt;
  }

  #break(problem: string): FreshetError {
    this.#broken ??= new FreshetError(
      "STORE_UNAVAILABLE",
      `${problem}; the store stopped writing so as not to acknowledge writes it could lose. Stop freshet, check ${this.dir} (restore it from a backup if needed) and start again`,
      { plugin: PLUGIN, retriable: false },
    );
    return this.#broken;
  }

  /** Checks that the log at its path is still the file this store appends to, untouched by others. */
  async #verify(checkSize: boolean): Promise<void> {
    const gen = this.#gen;
    let onPath, own;
    try {
      onPath = await stat(this.logPath);
    } catch (e) {
      if (gen !== this.#gen) return;
      throw this.#break(`${this.logPath} is gone (${codeMessage(e)})`);
    }
    try {
      own = await call<{ size: number }>((cb) => fstat(this.#fd, cb));
    } catch (e) {
      if (gen !== this.#gen) return; // a compaction swapped the descriptor meanwhile
      throw this.#break(`${this.logPath} cannot be checked (${codeMessage(e)})`);
    }
    if (gen !== this.#gen) return; // an append or compaction ran meanwhile
    if (onPath.ino !== this.#ino || onPath.dev !== this.#dev) throw this.#break(`${this.logPath} was replaced by another file while the store had it open`);
    if (checkSize && own.size !== this.#size) throw this.#break(`${this.logPath} was changed by another writer (${own.size} bytes, where this store wrote ${this.#size})`);
  }

  /** Cuts a failed append's partial line off, so that nothing glues onto it. */
  async #cutBack(): Promise<void> {
    const fd = this.#fd;
    await call<void>((cb) => ftruncate(fd, this.#size, (e) => cb(e, undefined)));
    await call<void>((cb) => fdatasync(fd, (e) => cb(e, undefined)));
    this.#repair = undefined;
  }

  /** Appends one group of changes as one line and fdatasyncs it. Throws (and leaves the log as it was) on failure. */
  async append(changes: LocalChange[]): Promise<void> {
    if (this.#closed) throw new FreshetError("INVALID_CONFIG", "the file store is closed", { plugin: PLUGIN, retriable: false });
    if (this.#broken) throw this.#broken;
    for (const c of changes) {
      const bad = checkChange(c);
      // Never log what the next open would refuse to read.
      if (bad) throw new FreshetError("INTERNAL", `refusing to log a change that could not be read back: ${bad}`, { plugin: PLUGIN, retriable: false });
    }
    this.#busy = true;
    this.#gen++;
    try {
      if (this.#repair !== undefined) await this.#cutBack();
      await this.#verify(true);
      const seq = this.#seq + 1;
      const bytes = encoder.encode(JSON.stringify({ seq, c: changes }) + "\n");
      try {
        await writeAll(this.#fd, bytes, null);
        await call<void>((cb) => fdatasync(this.#fd, (e) => cb(e, undefined)));
      } catch (e) {
        this.#repair = e;
        await this.#cutBack().catch(() => {});
        throw e;
      }
      this.#seq = seq;
      this.#size += bytes.length;
    } catch (e) {
      if (e instanceof FreshetError) throw e;
      throw new FreshetError("STORE_UNAVAILABLE", `cannot append to ${this.logPath}: ${codeMessage(e)}`, { plugin: PLUGIN, retriable: true, cause: e });
    } finally {
      this.#busy = false;
      this.#gen++;
    }
  }

  /**
   * Writes the state as a new snapshot and starts a fresh log after it.
   * Drops expired rows and idempotency keys from `state` first. Run it while
   * nothing is appended (inside `engine.exclusive`).
   */
  async compact(state: LocalState, now: number): Promise<void> {
    if (this.#closed) return;
    if (this.#broken) throw this.#broken;
    this.#busy = true;
    this.#gen++;
    try {
      if (this.#repair !== undefined) await this.#cutBack();
      for (const m of state.rows.values()) for (const [k, e] of m) if (e.expiresAt !== undefined && e.expiresAt <= now) m.delete(k);
      for (const [k, e] of state.idem) if (e.expiresAt <= now) state.idem.delete(k);
      const seq = this.#seq;
      this.#snapshotBytes = await this.#writeSnapshot(state, seq);
      await this.#startLog(seq);
      this.#compactAt = this.#threshold();
    } catch (e) {
      // The old log still holds everything; try again once it has grown as much again.
      this.#compactAt = this.#size + Math.max(this.#compactBytes, this.#snapshotBytes);
      if (e instanceof FreshetError) throw e;
      throw new FreshetError("STORE_UNAVAILABLE", `cannot compact ${this.logPath} into ${this.snapshotPath}: ${codeMessage(e)}`, { plugin: PLUGIN, retriable: true, cause: e });
    } finally {
      this.#busy = false;
      this.#gen++;
    }
  }

  async #writeSnapshot(state: LocalState, seq: number): Promise<number> {
    const tmp = tempName(this.snapshotPath);
    const fd = await call<number>((cb) => fsOpen(tmp, "w", cb));
    let pos = 0;
    try {
      let chunk = JSON.stringify({ format: "freshet-snapshot", version: FORMAT_VERSION, seq, at: new Date().toISOString() }) + "\n";
      let count = 0;
      const flush = async () => {
        const bytes = encoder.encode(chunk);
        await writeAll(fd, bytes, pos);
        pos += bytes.length;
        chunk = "";
      };
      const put = async (c: LocalChange) => {
        chunk += JSON.stringify(c) + "\n";
        count++;
        if (chunk.length >= 1 << 20) await flush();
      };
      for (const [view, m] of state.rows) for (const [key, entry] of m) await put({ t: "row", view, key, entry });
      for (const [key, entry] of state.idem) await put({ t: "idem", key, entry });
      for (const [key, value] of state.checkpoints) await put({ t: "cp", key, value });
      for (const [key, value] of state.watermarks) await put({ t: "wm", key, value });
      for (const [key, lease] of state.leases) await put({ t: "lease", key, lease });
      chunk += JSON.stringify({ end: "freshet-snapshot", count }) + "\n";
      await flush();
      await call<void>((cb) => fsync(fd, (e) => cb(e, undefined)));
    } catch (e) {
      await call<void>((cb) => fsClose(fd, (er) => cb(er, undefined))).catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    await call<void>((cb) => fsClose(fd, (e) => cb(e, undefined)));
    try {
      await rename(tmp, this.snapshotPath);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    await syncDir(this.dir);
    return pos;
  }

  async #startLog(base: number): Promise<void> {
    const tmp = tempName(this.logPath);
    const header = encoder.encode(logHeader(base));
    const fd = await call<number>((cb) => fsOpen(tmp, "a", cb));
    try {
      await writeAll(fd, header, null);
      await call<void>((cb) => fdatasync(fd, (e) => cb(e, undefined)));
      await rename(tmp, this.logPath);
    } catch (e) {
      await call<void>((cb) => fsClose(fd, (er) => cb(er, undefined))).catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    // From the rename on, the new file is the log: append to it at once.
    const old = this.#fd;
    this.#fd = fd;
    const st = fstatSync(fd);
    this.#ino = st.ino;
    this.#dev = st.dev;
    this.#size = header.length;
    this.#headerBytes = header.length;
    await call<void>((cb) => fsClose(old, (e) => cb(e, undefined))).catch(() => {});
    await syncDir(this.dir);
  }

  /** For ping: rejects when the log cannot take appends. */
  async check(): Promise<void> {
    if (this.#closed) throw new FreshetError("INVALID_CONFIG", "the file store is closed", { plugin: PLUGIN, retriable: false });
    if (this.#broken) throw this.#broken;
    if (this.#repair !== undefined) {
      throw new FreshetError("STORE_UNAVAILABLE", `the last append to ${this.logPath} failed and its partial line could not be cut off yet: ${codeMessage(this.#repair)}`, { plugin: PLUGIN, retriable: true });
    }
    if (!this.#busy) await this.#verify(true);
  }

  /** Closes the log file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await call<void>((cb) => fsClose(this.#fd, (e) => cb(e, undefined))).catch(() => {});
  }
}

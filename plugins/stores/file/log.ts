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
 * Open loads the snapshot, then replays the log lines with a greater seq.
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
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  write as fsWrite,
  writeSync,
} from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { applyLocalChange, emptyLocalState, FreshetError, type LocalChange, type LocalState } from "../../../core/index.ts";
import { legacyPaths, moveLegacyAway, readLegacy } from "./migrate.ts";

/** The snapshot file's name inside the store directory. */
export const SNAPSHOT_FILE = "state.snapshot";
/** The log file's name inside the store directory. */
export const LOG_FILE = "state.log";
/** The format version this code writes, and the newest it reads. */
export const FORMAT_VERSION = 1;

const PLUGIN = "file";
const encoder = new TextEncoder();

// ---- checking what is read (and what is about to be written) ----------------

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === "object" && x !== null && !Array.isArray(x);
const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);
const isStr = (x: unknown): x is string => typeof x === "string";
const optNum = (x: unknown) => x === undefined || isNum(x);

/** Why `c` is not a {@link LocalChange} this store can replay, or undefined when it is one. */
export function checkChange(c: unknown): string | undefined {
  if (!isObj(c)) return "a change is not an object";
  switch (c.t) {
    case "row": {
      const e = c.entry;
      return isStr(c.view) && isStr(c.key) && isObj(e) && isObj(e.values) && isNum(e.eventTime) && optNum(e.createdTime) && optNum(e.expiresAt)
        ? undefined
        : `a row change (view ${JSON.stringify(c.view)}, key ${JSON.stringify(c.key)}) needs values and finite eventTime, createdTime and expiresAt`;
    }
    case "idem": {
      const e = c.entry;
      return isStr(c.key) && (e === null || (isObj(e) && (e.state === "pending" || e.state === "done") && isStr(e.fingerprint) && (e.token === undefined || isStr(e.token)) && isNum(e.expiresAt)))
        ? undefined
        : `an idempotency change (key ${JSON.stringify(c.key)}) has the wrong shape`;
    }
    case "cp":
      return isStr(c.key) && isStr(c.value) && /^\d+$/.test(c.value) ? undefined : `a checkpoint change (key ${JSON.stringify(c.key)}) needs a decimal string`;
    case "wm":
      return isStr(c.key) && isNum(c.value) ? undefined : `a watermark change (key ${JSON.stringify(c.key)}) needs a finite number`;
    case "lease": {
      const l = c.lease;
      return isStr(c.key) && isObj(l) && isStr(l.key) && isStr(l.owner) && isNum(l.counter) && isNum(l.expiresAt) ? undefined : `a lease change (key ${JSON.stringify(c.key)}) has the wrong shape`;
    }
  }
  return `unknown change type ${JSON.stringify(c.t)}`;
}

/** The error of a state file that cannot be read: it names the file and how to recover. */
export function unreadable(path: string, problem: string, remedy: string): FreshetError {
  return new FreshetError("INVALID_CONFIG", `${path} ${problem}, so the store will not open. ${remedy}`, { plugin: PLUGIN, retriable: false });
}

const preview = (s: string) => JSON.stringify(s.length > 60 ? s.slice(0, 60) + "..." : s);

/** Checks a header line; a newer version asks for an upgrade. */
export function readHeader(path: string, line: string, format: string, remedy: string): Obj {
  let h: unknown;
  try {
    h = JSON.parse(line);
  } catch {
    throw unreadable(path, `does not start with a ${format} header (line 1 is ${preview(line)})`, remedy);
  }
  if (!isObj(h) || h.format !== format) throw unreadable(path, `is not a ${format} file (line 1 is ${preview(line)})`, remedy);
  if (!Number.isInteger(h.version) || (h.version as number) < 1) throw unreadable(path, `has no valid format version (line 1 is ${preview(line)})`, remedy);
  if ((h.version as number) > FORMAT_VERSION) {
    throw new FreshetError("INVALID_CONFIG", `${path} was written by a newer freshet (${format} version ${h.version}; this one reads up to version ${FORMAT_VERSION}), so the store will not open. Upgrade freshet to open it.`, { plugin: PLUGIN, retriable: false });
  }
  return h;
}

// ---- reading ------------------------------------------------------------------

interface Line {
  text: string;
  /** Byte offset just after the line (and its line break). */
  end: number;
  /** False for a last line with no line break: torn by a crash mid-append. */
  terminated: boolean;
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads a file line by line with byte offsets, without holding it whole. Throws on invalid UTF-8. */
function* readLines(path: string): Generator<Line> {
  const fd = openSync(path, "r");
  const decoder = new TextDecoder("utf-8", { fatal: true });
  try {
    const buf = new Uint8Array(1 << 20);
    let parts: Uint8Array[] = []; // the current line's bytes so far
    let partLen = 0;
    let offset = 0; // file offset of the current line's start
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      const data = buf.subarray(0, n);
      let start = 0;
      for (let i = data.indexOf(10); i >= 0; i = data.indexOf(10, start)) {
        const piece = data.subarray(start, i);
        let bytes: Uint8Array = piece;
        if (partLen) {
          bytes = concat([...parts, piece], partLen + piece.length);
          parts = [];
          partLen = 0;
        }
        offset += bytes.length + 1;
        yield { text: decoder.decode(bytes), end: offset, terminated: true };
        start = i + 1;
      }
      if (start < n) {
        parts.push(data.slice(start));
        partLen += n - start;
      }
    }
    if (partLen) {
      let text: string;
      try {
        text = decoder.decode(concat(parts, partLen));
      } catch {
        text = "\ufffd"; // a torn line may end inside a character
      }
      yield { text, end: offset + partLen, terminated: false };
    }
  } finally {
    closeSync(fd);
  }
}

const exists = (path: string) => {
  try {
    statSync(path);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return false;
    throw new FreshetError("INVALID_CONFIG", `cannot read ${path}: ${(e as Error).message}`, { plugin: PLUGIN, retriable: false, cause: e });
  }
};

/** What {@link loadState} found. */
export interface LoadedState {
  state: LocalState;
  /** The seq of the last change applied (0 for none). */
  seq: number;
  /** Size of the snapshot file, 0 when there is none. */
  snapshotBytes: number;
  /** The log, when there is one. */
  log?: {
    /** Bytes up to the end of the last whole line: what a torn tail is cut back to. */
    goodBytes: number;
    /** The file's size; greater than goodBytes when the last line is torn. */
    size: number;
    /** Bytes of its header line. */
    headerBytes: number;
  };
}

/**
 * Loads the state of a store directory: the snapshot, then the log lines
 * after it. A torn last log line is left out (it was never acknowledged);
 * anything else unreadable throws a non-retriable FreshetError that names
 * the file and says how to recover.
 *
 * @example
 * ```ts
 * const { state, seq } = loadState("./data")
 * ```
 */
export function loadState(dir: string): LoadedState {
  const state = emptyLocalState();
  const snapshotPath = join(dir, SNAPSHOT_FILE);
  const logPath = join(dir, LOG_FILE);
  let snapSeq = 0;
  let snapshotBytes = 0;
  const haveSnapshot = exists(snapshotPath);

  if (haveSnapshot) {
    const remedy = `Restore ${SNAPSHOT_FILE} from a backup, or move ${SNAPSHOT_FILE} and ${LOG_FILE} out of ${dir} to start empty.`;
    let count = 0;
    let done = false;
    let lineNo = 0;
    try {
      for (const line of readLines(snapshotPath)) {
        lineNo++;
        if (!line.terminated) throw unreadable(snapshotPath, `is truncated (line ${lineNo} is cut off)`, remedy);
        if (lineNo === 1) {
          const h = readHeader(snapshotPath, line.text, "freshet-snapshot", remedy);
          if (!Number.isInteger(h.seq) || (h.seq as number) < 0) throw unreadable(snapshotPath, "has no valid seq in its header", remedy);
          snapSeq = h.seq as number;
          continue;
        }
        if (done) throw unreadable(snapshotPath, `has data after its end marker (line ${lineNo})`, remedy);
        let c: unknown;
        try {
          c = JSON.parse(line.text);
        } catch {
          throw unreadable(snapshotPath, `has an unreadable line ${lineNo} (${preview(line.text)})`, remedy);
        }
        if (isObj(c) && c.end === "freshet-snapshot") {
          if (c.count !== count) throw unreadable(snapshotPath, `ends after ${count} entries but its end marker says ${c.count}`, remedy);
          done = true;
          snapshotBytes = line.end;
          continue;
        }
        const bad = checkChange(c);
        if (bad) throw unreadable(snapshotPath, `has an invalid line ${lineNo}: ${bad}`, remedy);
        applyLocalChange(state, c as LocalChange);
        count++;
      }
    } catch (e) {
      if (e instanceof FreshetError) throw e;
      throw unreadable(snapshotPath, `cannot be read (${(e as Error).message})`, remedy);
    }
    if (lineNo === 0) throw unreadable(snapshotPath, "is empty", remedy);
    if (!done) throw unreadable(snapshotPath, `is truncated (no end marker after ${lineNo} lines)`, remedy);
  }

  if (!exists(logPath)) return { state, seq: snapSeq, snapshotBytes };

  const remedy = haveSnapshot
    ? `Restore ${LOG_FILE} from a backup, or move it out of ${dir} to start from what ${SNAPSHOT_FILE} holds (losing the writes logged since the last compaction).`
    : `Restore ${LOG_FILE} from a backup, or move it out of ${dir} to start empty.`;
  let seq = 0;
  let lineNo = 0;
  let goodBytes = 0;
  let headerBytes = 0;
  let size = 0;
  try {
    for (const line of readLines(logPath)) {
      lineNo++;
      size = line.end;
      if (lineNo === 1) {
        if (!line.terminated) throw unreadable(logPath, "has a truncated header", remedy);
        const h = readHeader(logPath, line.text, "freshet-log", remedy);
        if (!Number.isInteger(h.base) || (h.base as number) < 0) throw unreadable(logPath, "has no valid base seq in its header", remedy);
        seq = h.base as number;
        if (seq > snapSeq) {
          throw unreadable(logPath, `continues from entry ${seq}, but ${haveSnapshot ? `${SNAPSHOT_FILE} covers only up to entry ${snapSeq}` : `${SNAPSHOT_FILE} is missing`}`, `Restore the matching ${SNAPSHOT_FILE} from a backup, or move ${SNAPSHOT_FILE} and ${LOG_FILE} out of ${dir} to start empty.`);
        }
        goodBytes = headerBytes = line.end;
        continue;
      }
      if (!line.terminated) break; // torn by a crash mid-append: never acknowledged
      if (!line.text.trim()) {
        goodBytes = line.end;
        continue;
      }
      let entry: unknown;
      try {
        entry = JSON.parse(line.text);
      } catch {
        throw unreadable(logPath, `has an unreadable line ${lineNo} (${preview(line.text)}) before its end`, remedy);
      }
      if (!isObj(entry) || !Number.isInteger(entry.seq) || !Array.isArray(entry.c)) throw unreadable(logPath, `has an invalid line ${lineNo} (${preview(line.text)})`, remedy);
      if (entry.seq !== seq + 1) throw unreadable(logPath, `skips from entry ${seq} to ${entry.seq} at line ${lineNo}`, remedy);
      seq++;
      if (seq > snapSeq) {
        for (const c of entry.c) {
          const bad = checkChange(c);
          if (bad) throw unreadable(logPath, `has an invalid line ${lineNo}: ${bad}`, remedy);
        }
        for (const c of entry.c) applyLocalChange(state, c as LocalChange);
      }
      goodBytes = line.end;
    }
  } catch (e) {
    if (e instanceof FreshetError) throw e;
    throw unreadable(logPath, `cannot be read (${(e as Error).message})`, remedy);
  }
  if (lineNo === 0) throw unreadable(logPath, "is empty (it has no header)", remedy);
  return { state, seq: Math.max(seq, snapSeq), snapshotBytes, log: { goodBytes, size, headerBytes } };
}

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

/**
 * @module
 * Loading the state of a file store (the formats are described in
 * `log.ts`): the snapshot, then the log lines after it, with every check.
 * A torn last log line is left out; anything else unreadable, of the wrong
 * shape or from a newer format version refuses to open, naming the file and
 * saying how to recover.
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import { applyLocalChange, emptyLocalState, FreshetError, type LocalChange, type LocalState } from "../../../core/index.ts";

/** The snapshot file's name inside the store directory. */
export const SNAPSHOT_FILE = "state.snapshot";
/** The log file's name inside the store directory. */
export const LOG_FILE = "state.log";
/** The format version this code writes, and the newest it reads. */
export const FORMAT_VERSION = 1;

const PLUGIN = "file";

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

/** Whether a file exists; any other error than ENOENT refuses to open. */
export const exists = (path: string): boolean => {
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

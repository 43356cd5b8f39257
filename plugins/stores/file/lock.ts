/**
 * @module
 * One process per store directory: an exclusive lock file that names its
 * holder, taken over when the holder died on this host.
 */
import { closeSync, fsyncSync, openSync, readFileSync, readlinkSync, statSync, unlinkSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { FreshetError } from "../../../core/index.ts";

/** The lock file's name inside the store directory. */
export const LOCK_FILE = "freshet.lock";

interface Holder {
  pid: number;
  host: string;
  since: string;
  token: string;
  /** The kernel's boot id (Linux): a lock from an earlier boot is dead. */
  boot?: string;
  /** The pid namespace (Linux): a pid of another container cannot be checked from here. */
  pidns?: string;
}

const readId = (read: () => string) => {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
};

/** Tokens of the locks this process holds, to tell its own live lock from a dead predecessor's with the same pid. */
const heldHere = new Set<string>();

/** A held directory lock. */
export interface DirLock {
  readonly path: string;
  /** Removes the lock file, if it is still this lock's. */
  release(): void;
}

const codeOf = (e: unknown) => (e as { code?: string })?.code;

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    if (codeOf(e) === "ENOENT") return undefined;
    throw e;
  }
}

function parseHolder(text: string): Holder | undefined {
  try {
    const h = JSON.parse(text);
    if (h && typeof h.pid === "number" && typeof h.host === "string" && typeof h.token === "string") return h;
  } catch {
    // unreadable: see isStale
  }
  return undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return codeOf(e) === "EPERM";
  }
}

/**
 * Whether a lock can be taken over. Only a holder on this host (and in this
 * pid namespace) can be checked: its pid is gone, or it is this process's
 * own pid (a container restarted as pid 1) with a token this process does
 * not hold. A lock from before the last reboot is dead too.
 */
function isStale(holder: Holder | undefined, path: string, me: Holder): boolean {
  if (!holder) {
    // A live opener writes its lock within microseconds of creating it.
    try {
      return Date.now() - statSync(path).mtimeMs > 10_000;
    } catch {
      return false;
    }
  }
  if (holder.host !== me.host) return false;
  if (holder.boot && me.boot && holder.boot !== me.boot) return true;
  if (holder.pidns && me.pidns && holder.pidns !== me.pidns) return false;
  if (holder.pid === process.pid) return !heldHere.has(holder.token);
  return !alive(holder.pid);
}

function heldError(dir: string, path: string, holder: Holder | undefined): FreshetError {
  const shared = "A file store belongs to one process; to run several processes on one state, use a shared store, e.g. --store redis://host:6379 (or the SQLite store)";
  if (!holder) return new FreshetError("INVALID_CONFIG", `${dir} is being opened by another process (${path} was just created and is not written yet); try again. ${shared}.`, { plugin: "file", retriable: false });
  if (holder.pid === process.pid && holder.host === hostname()) {
    return new FreshetError("INVALID_CONFIG", `${dir} is already open in this process under another path (a symlink?); open it by one path`, { plugin: "file", retriable: false });
  }
  return new FreshetError(
    "INVALID_CONFIG",
    `${dir} is in use by another freshet process: pid ${holder.pid} on host "${holder.host}", since ${holder.since}. ${shared}. ` +
      `If that process is gone (a lock from another host or container cannot be checked from here), remove ${path}.`,
    { plugin: "file", retriable: false },
  );
}

/**
 * Takes the exclusive lock of a store directory (which must exist), or
 * throws a non-retriable FreshetError naming the holder. A lock whose holder
 * died on this host (SIGKILL, power loss) is taken over.
 *
 * @example
 * ```ts
 * const lock = lockDir("/var/lib/freshet")
 * try { ... } finally { lock.release() }
 * ```
 */
export function lockDir(dir: string, name: string = LOCK_FILE): DirLock {
  const lock = takeLock(dir, name, true);
  return lock!;
}

/**
 * Takes the lock file `name` in `dir` like {@link lockDir}, or returns
 * undefined when a live process holds it (or one that cannot be checked
 * from here: another host). Synchronous.
 */
export function tryLock(dir: string, name: string): DirLock | undefined {
  return takeLock(dir, name, false);
}

/** Whether the lock file at `path` is absent, or its holder is gone (died on this host, or before the last reboot). */
export function lockGone(path: string): boolean {
  const text = readText(path);
  if (text === undefined) return true;
  return isStale(parseHolder(text), path, self());
}

function self(): Holder & { format: string } {
  return {
    format: "freshet-lock/1",
    pid: process.pid,
    host: hostname(),
    since: new Date().toISOString(),
    token: crypto.randomUUID(),
    boot: readId(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8")),
    pidns: readId(() => readlinkSync("/proc/self/ns/pid")),
  };
}

function takeLock(dir: string, name: string, strict: boolean): DirLock | undefined {
  const path = join(dir, name);
  const me = self();
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx");
    } catch (e) {
      if (codeOf(e) !== "EEXIST") throw new FreshetError("INVALID_CONFIG", `cannot create the lock file ${path}: ${(e as Error).message}`, { plugin: "file", retriable: false, cause: e });
      const text = readText(path);
      if (text === undefined) continue; // released meanwhile
      const holder = parseHolder(text);
      if (!isStale(holder, path, me)) {
        if (!strict) return undefined;
        throw heldError(dir, path, holder);
      }
      // Remove it only if it is still the dead holder's, then race for it again.
      if (readText(path) === text) {
        try {
          unlinkSync(path);
        } catch (e) {
          if (codeOf(e) !== "ENOENT") throw e;
        }
      }
      continue;
    }
    try {
      writeSync(fd, JSON.stringify(me) + "\n");
      fsyncSync(fd);
    } catch (e) {
      closeSync(fd);
      unlinkSync(path);
      throw new FreshetError("INVALID_CONFIG", `cannot write the lock file ${path}: ${(e as Error).message}`, { plugin: "file", retriable: false, cause: e });
    }
    closeSync(fd);
    heldHere.add(me.token);
    return {
      path,
      release() {
        if (!heldHere.delete(me.token)) return;
        try {
          if (parseHolder(readText(path) ?? "")?.token === me.token) unlinkSync(path);
        } catch {
          // a lock left behind is taken over by the next opener on this host
        }
      },
    };
  }
  if (!strict) return undefined;
  throw new FreshetError("INVALID_CONFIG", `could not take the lock ${path}: it keeps changing hands; is another freshet starting on ${dir}?`, { plugin: "file", retriable: false });
}

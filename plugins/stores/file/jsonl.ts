/**
 * @module
 * Durable JSON Lines appends with group commit, shared by the offline log
 * and the dead-letter sink.
 */
import { mkdir, open } from "node:fs/promises";
import { dirname } from "node:path";

/**
 * Runs `flush` at most once at a time. Callers that arrive while a flush
 * runs share the next one (group commit), so N concurrent appends cost about
 * two writes and fsyncs, not N.
 */
class GroupCommit {
  #next?: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  #draining?: Promise<void>;
  readonly #flush: () => Promise<void>;

  constructor(flush: () => Promise<void>) {
    this.#flush = flush;
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
        // Let the appenders of this tick join before the flush starts.
        await Promise.resolve();
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

/** What {@link appender} gives. */
export interface Appender {
  /** Appends `text` (whole lines); resolves once it is on disk. */
  append(text: string): Promise<void>;
  /** Resolves when nothing is being written. */
  idle(): Promise<void>;
}

/**
 * Appends lines to a file, durably, with group commit: lines that arrive
 * during an append go out together in the next one.
 *
 * @example
 * ```ts
 * const file = appender("./data/dead-letters.jsonl")
 * await file.append(JSON.stringify(letter) + "\n")
 * ```
 */
export function appender(path: string): Appender {
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

/** Reads a file as blocks of whole lines (without their line breaks), without loading it all; a missing file has none. */
export async function* readLineBlocks(path: string): AsyncGenerator<string[]> {
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


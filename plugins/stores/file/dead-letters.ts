/**
 * @module
 * Dead letters as JSON Lines, in a file that rotates by size: `path`, then
 * `path.1` (the previous one), ... up to a number of files kept. What the
 * retention removes is reported (counted and logged), never dropped silently.
 */
import { open, rename, stat, unlink } from "node:fs/promises";
import { resolve } from "node:path";
import { type DeadLetter, type DeadLetterSink, FreshetError, type Logger, storeUnavailable } from "../../../core/index.ts";
import { appender, readLineBlocks } from "./jsonl.ts";

/** What the retention removed: one rotated file, and the letters it held. */
export interface DroppedDeadLetters {
  /** The file that was deleted. */
  path: string;
  /** Dead letters (lines) it held. */
  letters: number;
  /** Its size in bytes. */
  bytes: number;
}

/** Options of {@link fileDeadLetters}. */
export interface FileDeadLettersOptions {
  /** Size at which the file is rotated, in bytes. A file exceeds it by at most one batch. Default 64 MiB. */
  maxBytes?: number;
  /** Files kept, the current one included (`path`, `path.1`, ... `path.<keep-1>`). Default 5. */
  keep?: number;
  /** Called when the retention deletes a file, e.g. to count its letters in a metric. */
  onDrop?: (dropped: DroppedDeadLetters) => void;
  /** Where the deletion is logged (a warning). Default `console`. */
  logger?: Pick<Logger, "warn">;
}

/** Default rotation size: 64 MiB. */
export const DEFAULT_DEAD_LETTER_MAX_BYTES: number = 64 * 1024 * 1024;
/** Default number of dead-letter files kept. */
export const DEFAULT_DEAD_LETTER_KEEP = 5;

const encoder = new TextEncoder();

/**
 * A dead-letter sink that appends each letter as one JSON line to `path`,
 * creating its directory. A write resolves only once the lines are on disk.
 * When the file would grow past `maxBytes` it is renamed `path.1` (`.1`
 * becomes `.2`, and so on) and a new one is started; the oldest beyond
 * `keep` files is deleted, counted through `onDrop` and logged.
 *
 * @example
 * ```ts
 * const deadLetters = fileDeadLetters(".freshet/dead-letters.jsonl", {
 *   maxBytes: 16 * 1024 * 1024, keep: 3,
 *   onDrop: ({ letters }) => metrics.inc("freshet_dead_letters_dropped_total", { sink: "file" }, letters),
 * })
 * ```
 */
export function fileDeadLetters(path: string, opts: FileDeadLettersOptions = {}): DeadLetterSink {
  if (typeof path !== "string" || !path) {
    throw new FreshetError("INVALID_CONFIG", 'a path is required, e.g. fileDeadLetters(".freshet/dead-letters.jsonl")', { plugin: "file" });
  }
  const maxBytes = opts.maxBytes ?? DEFAULT_DEAD_LETTER_MAX_BYTES;
  const keep = opts.keep ?? DEFAULT_DEAD_LETTER_KEEP;
  if (!(Number.isSafeInteger(maxBytes) && maxBytes > 0)) throw new FreshetError("INVALID_CONFIG", `maxBytes must be a positive number of bytes, got ${maxBytes}`, { plugin: "file" });
  if (!(Number.isSafeInteger(keep) && keep >= 1)) throw new FreshetError("INVALID_CONFIG", `keep must be a whole number of files, at least 1, got ${keep}`, { plugin: "file" });
  const logger = opts.logger ?? console;
  const abs = resolve(path);
  let file = appender(abs);
  /** Bytes in the current file, its lines queued included; read once on the first write. */
  let size: number | undefined;
  /** A rotation in progress: appends wait for it. */
  let gate: Promise<void> = Promise.resolve();

  async function drop(victim: string): Promise<void> {
    const counted = await countLines(victim);
    if (!counted) return;
    await unlink(victim);
    const dropped = { path: victim, ...counted };
    logger.warn(`[freshet] [file] dead-letter retention deleted ${victim}: ${dropped.letters} dead letter(s), ${dropped.bytes} bytes (keep ${keep} file(s) of ${maxBytes} bytes; raise --dead-letter-max-bytes or --dead-letter-keep, or read them sooner)`);
    try {
      opts.onDrop?.(dropped);
    } catch {
      // A failing counter must not fail the write.
    }
  }

  async function rotate(old: ReturnType<typeof appender>): Promise<void> {
    await old.idle();
    if (keep === 1) return await drop(abs);
    await drop(`${abs}.${keep - 1}`);
    for (let i = keep - 2; i >= 1; i--) await renameIfThere(`${abs}.${i}`, `${abs}.${i + 1}`);
    await renameIfThere(abs, `${abs}.1`);
  }

  return {
    name: "file",
    async write(letters: DeadLetter[]): Promise<void> {
      if (!letters.length) return;
      const text = letters.map((l) => JSON.stringify(l) + "\n").join("");
      const bytes = encoder.encode(text).length;
      try {
        if (size === undefined) {
          const s = await stat(abs).then((st) => st.size, () => 0);
          size ??= s;
        }
        // Wait out rotations, also one that starts while we wait.
        for (;;) {
          const g = gate;
          await g;
          if (g === gate) break;
        }
        if (size > 0 && size + bytes > maxBytes) {
          // Decided synchronously: the appends queued so far finish in the old file, the rest wait for the new one.
          size = 0;
          const old = file;
          file = appender(abs);
          const rotation = rotate(old);
          gate = rotation.catch(async () => {
            // Not rotated: go on appending to the file as it is, and try again on the next write.
            size = await stat(abs).then((st) => st.size, () => 0);
          });
          await rotation;
        }
        size += bytes;
        await file.append(text);
      } catch (e) {
        throw storeUnavailable("file-dead-letters", e);
      }
    },
    close: async () => {
      await gate;
      await file.idle();
    },
  };
}

async function renameIfThere(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT") throw e;
  }
}

/** Lines and bytes of a file, or undefined when it does not exist. */
async function countLines(path: string): Promise<{ letters: number; bytes: number } | undefined> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw e;
  }
  try {
    const buf = new Uint8Array(1 << 20);
    let letters = 0;
    let bytes = 0;
    let last = 10;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      for (let i = 0; i < bytesRead; i++) if (buf[i] === 10) letters++;
      last = buf[bytesRead - 1];
      bytes += bytesRead;
    }
    if (bytes > 0 && last !== 10) letters++; // a torn last line is a letter too
    return { letters, bytes };
  } finally {
    await fh.close();
  }
}

const REASONS = new Set(["decode", "schema", "udf", "timestamp", "join_key", "late", "unknown_source", "truncated"]);

/** Why a parsed line is not a dead letter, or undefined when it is one. */
function notADeadLetter(x: unknown): string | undefined {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return "not a JSON object";
  const l = x as Record<string, unknown>;
  if (typeof l.source !== "string") return 'no "source"';
  if (typeof l.payload !== "string") return 'no "payload"';
  if (typeof l.position !== "object" || l.position === null || typeof (l.position as { kind?: unknown }).kind !== "string") return 'no "position"';
  if (typeof l.reason !== "string" || !REASONS.has(l.reason)) return `reason ${JSON.stringify(l.reason)} is not one Freshet writes`;
  return undefined;
}

/**
 * Reads a dead-letter file (JSON Lines, as {@link fileDeadLetters} writes it)
 * in chunks. Every line is checked before the first chunk is given, so a
 * file that is not a dead-letter file is refused as a whole, naming the
 * line; a torn last line (a crash during an append) is reported through
 * `onTorn` and left out.
 *
 * @example
 * ```ts
 * const { total, chunks } = await readDeadLetterFile("data/dead-letters.jsonl")
 * for await (const letters of chunks) console.log(letters.length)
 * ```
 */
export async function readDeadLetterFile(path: string, opts: { chunkSize?: number; onTorn?: (line: number) => void } = {}): Promise<{ total: number; chunks: AsyncIterable<DeadLetter[]> }> {
  const chunkSize = opts.chunkSize ?? 500;
  const full = resolve(path);
  try {
    await stat(full);
  } catch {
    throw new FreshetError("INVALID_CONFIG", `dead-letter file ${path} not found (looked for ${full})`, { plugin: "file" });
  }
  // First pass: check every line, count the letters, find a torn last line.
  let lineNo = 0;
  let total = 0;
  let torn: number | undefined;
  let pendingBad: { line: number; why: string } | undefined;
  for await (const lines of readLineBlocks(full)) {
    for (const line of lines) {
      lineNo++;
      if (!line.trim()) continue;
      if (pendingBad) throw badLine(path, pendingBad);
      let why: string | undefined;
      try {
        why = notADeadLetter(JSON.parse(line));
      } catch (e) {
        why = `not JSON (${(e as Error).message})`;
      }
      if (why) pendingBad = { line: lineNo, why };
      else total++;
    }
  }
  // Only the very last line may be torn; anything bad before it is refused above.
  if (pendingBad) {
    if (pendingBad.line === lineNo && pendingBad.why.startsWith("not JSON")) torn = pendingBad.line;
    else throw badLine(path, pendingBad);
  }
  if (torn !== undefined) opts.onTorn?.(torn);
  async function* chunks(): AsyncGenerator<DeadLetter[]> {
    let n = 0;
    let out: DeadLetter[] = [];
    for await (const lines of readLineBlocks(full)) {
      for (const line of lines) {
        n++;
        if (!line.trim() || n === torn) continue;
        out.push(JSON.parse(line) as DeadLetter);
        if (out.length >= chunkSize) yield out.splice(0);
      }
    }
    if (out.length) yield out;
  }
  return { total, chunks: chunks() };
}

function badLine(path: string, b: { line: number; why: string }): FreshetError {
  return new FreshetError("INVALID_CONFIG", `${path} line ${b.line} is not a dead letter: ${b.why}; give a file written by Freshet's dead-letter sink (remove or fix that line)`, { plugin: "file" });
}

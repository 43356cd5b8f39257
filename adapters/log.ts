/**
 * @module
 * The CLI's log: every line with a timestamp and a level, as text or as JSON
 * lines (`--log-format json`), and a burst of identical lines folded into one
 * "repeated N times" line, so an outage does not print one line per partition
 * per retry. Written by hand: it is 80 lines over `console`, and the logging
 * libraries (pino, winston) are Node-first and larger than the whole core.
 */
import type { Logger } from "../mod.ts";

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** `text`: `2026-12-04T18:50:00.123Z INFO  message`; `json`: one object a line. */
export type LogFormat = "text" | "json";

/** Options of {@link createLogger}. */
export interface LogOptions {
  format?: LogFormat;
  /** Lines below this level are not written. Default `info`. */
  level?: LogLevel;
  /** Where lines go, by level. Default: info and debug to stdout, warn and error to stderr. */
  write?: (level: LogLevel, line: string) => void;
  /** The clock, for tests. */
  now?: () => number;
  /** Identical lines within this many ms of the first are counted, not written. Default 10 s; 0 writes every line. */
  foldMs?: number;
}

/** A {@link Logger} with `debug`, and `flush` to write a pending "repeated" line. */
export interface CliLogger extends Logger {
  debug(msg: string, ...args: unknown[]): void;
  flush(): void;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** The message without the `[freshet] ` prefix the plugins put on their lines (the log says where it comes from). */
const bare = (msg: string): string => msg.replace(/^(\[freshet\]\s*)+/, "");

function render(args: unknown[]): string {
  return args.map((a) => (a instanceof Error ? (a.stack ?? a.message) : typeof a === "string" ? a : JSON.stringify(a))).join(" ");
}

/**
 * Creates the CLI's logger.
 *
 * @example
 * ```ts
 * const log = createLogger({ format: "json" })
 * log.info("[freshet] serving") // {"time":"...","level":"info","msg":"serving"}
 * ```
 */
export function createLogger(opts: LogOptions = {}): CliLogger {
  const format = opts.format ?? "text";
  const min = RANK[opts.level ?? "info"];
  const now = opts.now ?? Date.now;
  const foldMs = opts.foldMs ?? 10_000;
  const write = opts.write ?? ((level, line) => (RANK[level] >= RANK.warn ? console.error(line) : console.log(line)));
  let last: { level: LogLevel; msg: string; at: number; repeats: number } | undefined;

  const emit = (level: LogLevel, msg: string, at: number) => {
    const time = new Date(at).toISOString();
    write(level, format === "json" ? JSON.stringify({ time, level, msg }) : `${time} ${level.toUpperCase().padEnd(5)} ${msg}`);
  };
  const flush = () => {
    if (last && last.repeats > 0) emit(last.level, `${last.msg} (repeated ${last.repeats} more time${last.repeats === 1 ? "" : "s"})`, now());
    last = undefined;
  };
  const log = (level: LogLevel) => (msg: string, ...args: unknown[]) => {
    if (RANK[level] < min) return;
    const text = bare(args.length ? `${msg} ${render(args)}` : String(msg));
    const at = now();
    if (foldMs > 0 && last && last.msg === text && last.level === level && at - last.at < foldMs) {
      last.repeats++;
      return;
    }
    flush();
    emit(level, text, at);
    last = { level, msg: text, at, repeats: 0 };
  };
  return { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error"), flush };
}

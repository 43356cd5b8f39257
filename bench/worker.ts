/**
 * Measuring workers of the streaming benchmarks (bench/kafka.ts,
 * bench/kinesis.ts): each consumer under test runs in a child process of
 * the runtime under test, so that its CPU and memory are its own and the
 * bench's producer does not share its event loop. A worker prints
 * `RESULT <json>` when it is done, and may print progress lines before.
 */
import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { startChild, type Child } from "../tests/services/system.ts";
import { ROOT, run, tsCommand, type Runtime } from "./lib.ts";

/** Runs `<runtime> <file> --worker ...args` to completion and returns its RESULT. */
export async function runWorker<T>(rt: Runtime, file: string, args: string[], timeoutMs: number): Promise<T> {
  const [cmd, a] = tsCommand(rt, file, ["--worker", ...args]);
  const out = await run(cmd, a, { timeoutMs });
  return parseResult<T>(out);
}

export function parseResult<T>(out: string): T {
  const line = out.split("\n").reverse().find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`the worker printed no RESULT line:\n${out.slice(-3000)}`);
  return JSON.parse(line.slice("RESULT ".length)) as T;
}

export interface StreamingWorker {
  child: Child;
  pid: number;
  /** Resolves with the RESULT line's value; rejects if the worker exits without one. */
  result: Promise<unknown>;
  /** Resolves when a line starting with `prefix` was printed (immediately if one was). */
  line(prefix: string, timeoutMs?: number): Promise<string>;
}

/** Starts a worker that keeps running; `onLine` sees every line it prints. */
export function startWorker(rt: Runtime, file: string, args: string[], onLine?: (line: string) => void): StreamingWorker {
  const [cmd, a] = tsCommand(rt, file, ["--worker", ...args]);
  const seen: string[] = [];
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  let resolveResult!: (v: unknown) => void;
  let rejectResult!: (e: Error) => void;
  const result = new Promise<unknown>((res, rej) => ((resolveResult = res), (rejectResult = rej)));
  result.catch(() => {});
  const child = startChild(cmd, a, {
    cwd: ROOT,
    onLine(l) {
      if (l.startsWith("RESULT ")) {
        try {
          resolveResult(JSON.parse(l.slice(7)));
        } catch (e) {
          rejectResult(e as Error);
        }
      }
      if (seen.length < 200) seen.push(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (l.startsWith(waiters[i].prefix)) {
          waiters[i].resolve(l);
          waiters.splice(i, 1);
        }
      }
      onLine?.(l);
    },
  });
  child.proc.on("exit", (code, sig) => rejectResult(new Error(`worker exited (${code ?? sig}) without a RESULT line:\n${child.output()}`)));
  return {
    child,
    pid: child.proc.pid!,
    result,
    line(prefix, timeoutMs = 60_000) {
      const hit = seen.find((l) => l.startsWith(prefix));
      if (hit) return Promise.resolve(hit);
      return new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`worker printed no "${prefix}" line within ${timeoutMs} ms:\n${child.output()}`)), timeoutMs);
        const exit = () => reject(new Error(`worker exited before printing "${prefix}":\n${child.output()}`));
        child.proc.once("exit", exit);
        waiters.push({
          prefix,
          resolve: (l) => {
            clearTimeout(t);
            child.proc.off("exit", exit);
            resolve(l);
          },
        });
      });
    },
  };
}

/** Resident set size of a process in MB (VmRSS), or undefined off Linux / once it is gone. */
export function rssMB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The pid of a direct child of this process whose command line matches (e.g. the kcat of the mock cluster). */
export function childPid(match: (cmdline: string[]) => boolean): number | undefined {
  return childPids(match)[0];
}

/** The pids of every direct child of this process whose command line matches. */
export function childPids(match: (cmdline: string[]) => boolean): number[] {
  const found: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      if (match(readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0"))) found.push(Number(d));
    } catch { /* gone */ }
  }
  return found;
}

/** A worker's argument `--name value`, required. */
export function arg(argv: string[], name: string, fallback?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
  if (fallback !== undefined) return fallback;
  throw new Error(`worker: --${name} is required`);
}

/** Runtimes of a streaming bench: the ones asked for with --runtime / BENCH_RUNTIMES, else Node only. */
export function streamRuntimes(all: Runtime[], argv: string[] = process.argv.slice(2)): Runtime[] {
  const explicit = argv.some((a) => a === "--runtime" || a.startsWith("--runtime=")) || !!process.env.BENCH_RUNTIMES;
  return explicit ? all : ["node"];
}

/** Which runtime this process is. */
export const thisRuntime = (): Runtime => ("Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node");

/** A logger that drops info and sends warnings and errors to stderr. */
export const quietLogger = { info: () => {}, warn: (m: string) => console.error(m), error: (m: string) => console.error(m) };

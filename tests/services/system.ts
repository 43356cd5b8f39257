// Helpers shared by the service harnesses: finding/installing system binaries,
// picking free ports, waiting for TCP services, and stopping child processes.
// Only node:* modules are used so this runs unchanged on Node, Bun and Deno.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { createServer, connect } from "node:net";
import { delimiter, join } from "node:path";
import process from "node:process";

/** Absolute path of `bin` on PATH, or undefined. */
export function which(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, bin);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch { /* not here */ }
  }
  return undefined;
}

const tried = new Set<string>();

/**
 * Make sure the system binary `bin` is on PATH. When it is missing and we are
 * root on a Debian-like machine, install `aptPackage` once (running
 * `apt-get update` first only if the plain install fails). Otherwise throw an
 * error that tells the developer the exact command to run.
 */
export function ensureBinary(bin: string, aptPackage: string): string {
  const found = which(bin);
  if (found) return found;
  const isRoot = process.getuid?.() === 0;
  if (isRoot && which("apt-get") && !tried.has(aptPackage)) {
    tried.add(aptPackage);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const install = () =>
      spawnSync("apt-get", ["install", "-y", "-q", aptPackage], { stdio: ["ignore", "inherit", "inherit"], env }).status;
    if (install() !== 0) {
      spawnSync("apt-get", ["update", "-q"], { stdio: ["ignore", "inherit", "inherit"], env });
      install();
    }
    const after = which(bin);
    if (after) return after;
  }
  throw new Error(`${bin} not found: install it with "sudo apt-get install -y ${aptPackage}"`);
}

/** A port that was free a moment ago: bind port 0 on 127.0.0.1, read it, close. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Open a TCP connection, optionally send `send`, and resolve true when the
 * peer answers with data containing `expect` (or, without `expect`, as soon as
 * the connection opens). Resolves false on any error or after `timeoutMs`.
 */
export function tcpProbe(port: number, opts: { host?: string; send?: string; expect?: string; timeoutMs?: number } = {}): Promise<boolean> {
  const { host = "127.0.0.1", send, expect, timeoutMs = 1000 } = opts;
  return new Promise((resolve) => {
    let done = false;
    let buf = "";
    const sock = connect({ port, host });
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on("error", () => finish(false));
    sock.on("connect", () => {
      if (send !== undefined) sock.write(send);
      if (expect === undefined) finish(true);
    });
    sock.on("data", (d) => {
      buf += d.toString();
      if (expect !== undefined && buf.includes(expect)) finish(true);
    });
    sock.on("close", () => finish(false));
  });
}

/** Poll `check` until it resolves true, or throw after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, opts: { timeoutMs?: number; intervalMs?: number; child?: ChildProcess; output?: () => string } = {}): Promise<void> {
  const { timeoutMs = 15_000, intervalMs = 50, child, output } = opts;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what}: process exited (${child.exitCode ?? child.signalCode}) before it was ready\n${output?.() ?? ""}`);
    }
    if (await check()) return;
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms\n${output?.() ?? ""}`);
}

// Every child we start is remembered so that it can be killed if the test
// process exits without calling stop() (a failed assertion, a crash, ...).
const live = new Set<ChildProcess>();
function killLeftovers() {
  for (const c of live) {
    try {
      c.kill("SIGKILL");
      process.stderr.write(`killed leftover service process ${c.spawnfile} (pid ${c.pid}): call stop() in the test\n`);
    } catch { /* already gone */ }
  }
  live.clear();
}
process.on("exit", killLeftovers);
// `deno test` never emits process "exit"; it does dispatch "unload".
(globalThis as { addEventListener?: (type: string, fn: () => void) => void }).addEventListener?.("unload", killLeftovers);

/** Keep the last `max` characters of what a child wrote, for error messages. */
function tail(max = 4000) {
  let text = "";
  return {
    push(chunk: unknown) {
      text = (text + String(chunk)).slice(-max);
    },
    get: () => text,
  };
}

export interface Child {
  proc: ChildProcess;
  /** Last few KB of stdout+stderr, for error messages. */
  output(): string;
  /** Send `signal`, wait for exit; SIGKILL after `graceMs`. Idempotent. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/**
 * Spawn a long-running service process. stdout/stderr are always drained (a
 * full pipe would block a chatty child such as kcat -d mock) and the tail is
 * kept for diagnostics. `onLine` sees every stderr+stdout line.
 */
export function startChild(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string | undefined>; onLine?: (line: string) => void } = {}): Child {
  const proc = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(proc);
  // Unref the child and its pipes: a service a test forgot to stop must not
  // keep the test process alive (node --test would hang); the exit hook
  // above kills it when the process ends.
  proc.unref();
  (proc.stdout as unknown as { unref?: () => void }).unref?.();
  (proc.stderr as unknown as { unref?: () => void }).unref?.();
  const out = tail();
  let partial = "";
  const onData = (d: unknown) => {
    const s = String(d);
    out.push(s);
    if (!opts.onLine) return;
    partial += s;
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const l of lines) opts.onLine(l);
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  let gone = false;
  const exited = new Promise<void>((resolve) => {
    const done = () => { gone = true; live.delete(proc); resolve(); };
    proc.on("exit", done);
    // A failed spawn (ENOENT, ...) emits "error" and may never emit "exit".
    proc.on("error", (e) => { out.push(`\nspawn error: ${e.message}\n`); done(); });
  });
  return {
    proc,
    output: out.get,
    async stop(signal = "SIGTERM", graceMs = 5000) {
      if (!gone && proc.exitCode === null && proc.signalCode === null) {
        // Waiting on an unref'd child: Deno may end the test's event loop (or
        // never deliver "exit") with nothing else alive. Re-ref it, and poll
        // the pid as well, so that stop() always resolves once the child is gone.
        (proc as { ref?: () => void }).ref?.();
        proc.kill(signal);
        const t = setTimeout(() => proc.kill("SIGKILL"), graceMs);
        const poll = setInterval(() => {
          try {
            process.kill(proc.pid!, 0);
          } catch {
            gone = true;
          }
        }, 50);
        await Promise.race([exited, new Promise<void>((resolve) => {
          const check = setInterval(() => gone && (clearInterval(check), resolve()), 50);
        })]);
        clearTimeout(t);
        clearInterval(poll);
        live.delete(proc);
        return;
      }
      await exited;
    },
  };
}

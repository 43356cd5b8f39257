// A private redis-server per test (not the machine's shared one on 6379), so a
// test can stop, SIGKILL and restart it without disturbing anything else.
import { ensureBinary, freePort, startChild, tcpProbe, waitFor, type Child } from "./system.ts";

export interface RedisOptions {
  /** Port to listen on; a free one by default. */
  port?: number;
  /** Extra redis-server arguments, e.g. ["--maxmemory", "10mb"]. */
  args?: string[];
}

export interface RedisService {
  url: string;
  host: string;
  port: number;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (a crash, for fault tests). */
  kill(): Promise<void>;
  /** Start again on the same port (after stop/kill; stops first if running). Data is gone: nothing is persisted. */
  restart(): Promise<void>;
}

/** PING over a raw socket, so the harness needs no Redis client. */
export const redisPing = (port: number, host = "127.0.0.1") =>
  tcpProbe(port, { host, send: "PING\r\n", expect: "+PONG", timeoutMs: 500 });

export async function startRedis(opts: RedisOptions = {}): Promise<RedisService> {
  const bin = ensureBinary("redis-server", "redis-server");
  const host = "127.0.0.1";
  const port = opts.port ?? (await freePort());
  let child: Child | undefined;

  const launch = async () => {
    child = startChild(bin, [
      "--port", String(port), "--bind", host,
      "--save", "", "--appendonly", "no", "--daemonize", "no",
      ...(opts.args ?? []),
    ]);
    const c = child;
    await waitFor(`redis-server on ${port}`, () => redisPing(port, host), { child: c.proc, output: c.output });
  };
  await launch();

  return {
    url: `redis://${host}:${port}`,
    host,
    port,
    stop: () => child!.stop("SIGTERM"),
    kill: () => child!.stop("SIGKILL"),
    async restart() {
      await child!.stop("SIGTERM");
      await launch();
    },
  };
}

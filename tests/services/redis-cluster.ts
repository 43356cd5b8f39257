// A private Redis Cluster per test file: N redis-server processes with
// cluster-enabled on free ports, joined by `redis-cli --cluster create`
// (services.md). Masters only by default (3); `replicas: 1` with 6 nodes for
// a failover. A node can be SIGKILLed and restarted on its port: it keeps its
// nodes.conf (so it rejoins the cluster) and, with `appendonly` (default
// on, fsync always), its data too.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { redisPing } from "./redis.ts";
import { type Child, ensureBinary, freePort, sleep, startChild, waitFor } from "./system.ts";

export interface RedisClusterNode {
  port: number;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** Start again on the same port and directory (after kill). */
  start(): Promise<void>;
}

export interface RedisClusterService {
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`, every node a seed. */
  url: string;
  nodes: RedisClusterNode[];
  /** `redis-cli -p port ...`, its stdout. */
  cli(port: number, ...args: string[]): string;
  /** The ports of the nodes that are masters now, and the slot ranges each serves. */
  masters(): { port: number; slots: [number, number][] }[];
  /** Until every running node says cluster_state:ok and agrees on the masters. */
  waitOk(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedisCluster(opts: { masters?: number; replicas?: number; appendonly?: boolean; nodeTimeoutMs?: number } = {}): Promise<RedisClusterService> {
  const bin = ensureBinary("redis-server", "redis-server");
  const cliBin = ensureBinary("redis-cli", "redis-server");
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 0;
  const dir = mkdtempSync(join(tmpdir(), "freshet-cluster-"));
  const host = "127.0.0.1";
  const cli = (port: number, ...args: string[]) => execFileSync(cliBin, ["-h", host, "-p", String(port), ...args], { encoding: "utf8", timeout: 10_000 });
  const nodes: (RedisClusterNode & { child?: Child })[] = [];
  for (let i = 0; i < masters * (1 + replicas); i++) {
    const port = await freePort();
    const node: RedisClusterNode & { child?: Child } = {
      port,
      async kill() {
        await node.child?.stop("SIGKILL");
        node.child = undefined;
      },
      async start() {
        const c = node.child = startChild(bin, [
          "--port", String(port), "--bind", host, "--dir", dir,
          "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`,
          "--cluster-node-timeout", String(opts.nodeTimeoutMs ?? 2000),
          "--save", "", "--daemonize", "no",
          "--appendonly", opts.appendonly === false ? "no" : "yes", "--appendfsync", "always", "--appendfilename", `aof-${port}.aof`, "--appenddirname", `aof-${port}`,
        ]);
        await waitFor(`redis-server (cluster node) on ${port}`, () => redisPing(port, host), { child: c.proc, output: c.output });
      },
    };
    nodes.push(node);
  }
  await Promise.all(nodes.map((n) => n.start()));
  execFileSync(cliBin, ["--cluster", "create", ...nodes.map((n) => `${host}:${n.port}`), "--cluster-replicas", String(replicas), "--cluster-yes"], { encoding: "utf8", timeout: 60_000 });

  const running = () => nodes.filter((n) => n.child);
  const mastersNow = () => {
    const out: { port: number; slots: [number, number][] }[] = [];
    const [first] = running();
    const reply = cli(first.port, "cluster", "nodes");
    for (const line of reply.trim().split("\n")) {
      const f = line.split(" ");
      if (!f[2].includes("master") || f[2].includes("fail")) continue;
      const slots = f.slice(8).filter((s) => /^\d/.test(s)).map((s) => s.split("-").map(Number)).map(([a, b]) => [a, b ?? a] as [number, number]);
      if (slots.length) out.push({ port: Number(f[1].split(":")[1].split("@")[0]), slots });
    }
    return out;
  };
  const waitOk = async (timeoutMs = 30_000) => {
    await waitFor("cluster_state:ok on every node", async () => {
      try {
        for (const n of running()) if (!cli(n.port, "cluster", "info").includes("cluster_state:ok")) return false;
        const ms = mastersNow();
        return ms.length === masters && ms.reduce((s, m) => s + m.slots.reduce((x, [a, b]) => x + b - a + 1, 0), 0) === 16384;
      } catch {
        return false;
      }
    }, { timeoutMs, intervalMs: 200 });
    await sleep(200);
  };
  await waitOk();
  return {
    url: `redis+cluster://${nodes.map((n) => `${host}:${n.port}`).join(",")}`,
    nodes,
    cli,
    masters: mastersNow,
    waitOk,
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

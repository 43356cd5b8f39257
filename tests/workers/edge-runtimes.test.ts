// @runtimes node
/**
 * The edge_push receiver with the Upstash store on Bun and Deno, each started
 * as a child process from the example entries, against the local Upstash REST
 * server (forwarding to a real redis-server).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { startRedis } from "../services/redis.ts";
import { startUpstash } from "../services/upstash-server.ts";
import { freePort, waitFor } from "../services/system.ts";

const root = new URL("../../", import.meta.url).pathname;
const bin = (b: string) => join(root, "node_modules/.bin", b);

describe("edge_push on Bun and Deno with Upstash", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let upstash: Awaited<ReturnType<typeof startUpstash>>;
  before(async () => {
    redis = await startRedis();
    upstash = await startUpstash({ redisUrl: redis.url, token: "rt-token" });
  });
  after(async () => {
    await upstash?.stop();
    await redis?.stop();
  });

  const entries: Record<string, string[]> = {
    bun: [bin("bun"), "examples/edge_push/bun.ts"],
    deno: [bin("deno"), "run", "-A", "examples/edge_push/deno.ts"],
  };
  for (const [runtime, [cmd, ...args]] of Object.entries(entries)) {
    it(`${runtime}: push and read back through Upstash`, { timeout: 90_000 }, async () => {
      const port = await freePort();
      let out = "";
      const child = spawn(cmd, args, { cwd: root, env: { ...process.env, PORT: String(port), UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: "rt-token" }, stdio: ["ignore", "pipe", "pipe"] });
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (out += d));
      try {
        await waitFor(`${runtime} on ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.ok === true, { timeoutMs: 60_000 });
        const user = `${runtime}-user`;
        const res = await fetch(`http://127.0.0.1:${port}/push`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ push_source_name: "user_events", df: { user_id: [user], last_page: ["/cart"], cart_items: [3], cart_value: [12.5], ts: [Date.now()] } }),
        });
        assert.equal(res.status, 200, await res.clone().text());
        const got = await (await fetch(`http://127.0.0.1:${port}/get-online-features`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ entities: { user_id: [user] }, features: ["user_activity:cart_value"] }),
        })).json();
        assert.deepEqual(got.results[1].values, [12.5]);
        assert.ok((upstash.requests["/pipeline"] ?? 0) + (upstash.requests["/"] ?? 0) > 0);
      } catch (e) {
        throw new Error(`${(e as Error).message}\n--- ${runtime} output ---\n${out}`);
      } finally {
        child.kill("SIGTERM");
      }
    });
  }
});

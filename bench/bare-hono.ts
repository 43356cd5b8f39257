/**
 * The P3 baseline: a bare Hono app that answers 200, served by the same
 * Freshet adapter (adapters/node.ts, bun.ts or deno.ts) as `freshet serve`.
 * It does not read the body: it is the ceiling of "HTTP on this runtime".
 *
 *   node --import tsx bench/bare-hono.ts --port 8081
 *   node_modules/.bin/bun bench/bare-hono.ts --port 8081
 *   node_modules/.bin/deno run -A bench/bare-hono.ts --port 8081
 *
 * `--read-body` also reads and parses the body (for the analysis of P3, not
 * its baseline).
 *
 * `--hmget <redis url> --key <key> --fields a,b,_ts` makes it the P6
 * baseline: POST /get-online-features reads and parses the body, does one
 * raw HMGET of those fields with ioredis (the client settings of
 * redisStore) and answers the values as JSON; nothing else (no
 * validation, no registry, no metrics).
 */
import process from "node:process";
import { Hono } from "hono";

const runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";

const args = process.argv.slice(2);
// --read-body (analysis only, not the P3 baseline): also read the body and JSON.parse it.
const readBody = args.includes("--read-body");

const app = new Hono();
app.get("/health", (c) => c.json({ status: "ok" }));
const hmgetAt = args.indexOf("--hmget");
let disconnect = () => {};
if (hmgetAt >= 0) {
  const { Redis } = await import("ioredis");
  const value = (name: string) => args[args.indexOf(`--${name}`) + 1];
  const redis = new Redis(args[hmgetAt + 1], { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
  await redis.connect();
  disconnect = () => redis.disconnect();
  const key = value("key"), fields = value("fields").split(",");
  app.post("/get-online-features", async (c) => {
    JSON.parse(await c.req.text());
    return c.json({ values: await redis.hmget(key, ...fields) });
  });
}
if (readBody) app.all("*", async (c) => c.json({ status: "ok", keys: Object.keys(JSON.parse(await c.req.text())).length }));
else app.all("*", (c) => c.json({ status: "ok" }));

const at = args.indexOf("--port");
const port = at >= 0 ? Number(args[at + 1]) : 8081;
const adapter = runtime === "bun" ? await import("../adapters/bun.ts") : runtime === "deno" ? await import("../adapters/deno.ts") : await import("../adapters/node.ts");
const server = await adapter.serve(app, { port, hostname: "127.0.0.1" });
console.log(`[bare-hono] listening on http://127.0.0.1:${server.port} (${runtime})`);
adapter.onShutdown(async () => {
  await server.close();
  disconnect();
});

// @runtimes node
/**
 * The hostile-request battery (tests/http/hostile-cases.ts) against the
 * Worker in workerd (miniflare), with the Upstash REST fake in front of a real
 * redis-server: one Worker without credentials, one with WRITE_TOKEN,
 * READ_TOKEN and WEBHOOK_SECRET bindings. The loopback and CORS cases have no
 * Worker binding and run only on the other runtimes. workerd is its own
 * runtime, so this file runs once, from Node.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { bundleWorker } from "../fixtures/worker-bundle.ts";
import { Miniflare } from "miniflare";
import { startRedis } from "../services/redis.ts";
import { startUpstash } from "../services/upstash-server.ts";
import { type Answer, CASES, commonChecks, type ConfigName, type HostileRequest, quadraticRead, rawHttp, READ_TOKEN, WEBHOOK_SECRET, WRITE_TOKEN } from "../http/hostile-cases.ts";


describe("hostile requests via the Worker in workerd", () => {
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let upstash: Awaited<ReturnType<typeof startUpstash>>;
  const workers: Partial<Record<ConfigName, Miniflare>> = {};
  before(async () => {
    redis = await startRedis();
    upstash = await startUpstash({ redisUrl: redis.url, token: "hostile-token" });
    const bundled = await bundleWorker("tests/workers/hostile-worker.ts");
    const store = { UPSTASH_REDIS_REST_URL: upstash.url, UPSTASH_REDIS_REST_TOKEN: "hostile-token" };
    const bindings: Partial<Record<ConfigName, Record<string, string>>> = {
      open: store,
      auth: { ...store, WRITE_TOKEN, READ_TOKEN, WEBHOOK_SECRET },
    };
    for (const [config, b] of Object.entries(bindings)) {
      workers[config as ConfigName] = new Miniflare({ modules: true, script: bundled, compatibilityDate: "2025-09-01", bindings: b });
    }
  });
  after(async () => {
    for (const mf of Object.values(workers)) await mf?.dispose();
    await upstash?.stop();
    await redis?.stop();
  });

  // Over raw HTTP/1.1 to workerd's own listener: an early 413 that closes the connection mid-upload is still read.
  const send = async (config: ConfigName, req: HostileRequest): Promise<Answer> => rawHttp(Number((await workers[config]!.ready).port), req);

  const table: string[] = [];
  for (const c of CASES) {
    if (c.config !== "open" && c.config !== "auth") continue;
    if (c.only && !c.only.includes("server")) continue;
    it(`${c.name} -> ${c.expect.join(" or ")}`, { timeout: 30_000 }, async () => {
      const a = await send(c.config, c.request());
      table.push(`| ${c.config} | ${c.name} | ${a.status} | ${a.status >= 400 && a.text.startsWith("{") ? (JSON.parse(a.text).error?.code ?? "") : ""} |`);
      assert.ok(c.expect.includes(a.status), `${c.name}: status ${a.status}, expected ${c.expect.join(" or ")}: ${a.text.slice(0, 300)}`);
      commonChecks(a, c.config);
      c.check?.(a);
    });
  }

  it("30 quadratic reads: each refused quickly, and the Worker keeps serving", { timeout: 60_000 }, async () => {
    const body = quadraticRead();
    const read = () => send("open", { method: "POST", path: "/get-online-features", headers: { "content-type": "application/json" }, body });
    const answers: Answer[] = [];
    for (let i = 0; i < 10; i++) answers.push(await read());
    answers.push(...(await Promise.all(Array.from({ length: 20 }, read))));
    for (const a of answers) assert.ok(a.status === 413 || a.status === 422, String(a.status));
    assert.ok(Math.max(...answers.map((a) => a.ms)) < 10_000);
    assert.equal((await send("open", { method: "GET", path: "/health" })).status, 200);
    if (process.env.HOSTILE_TABLE) console.log(`\n| config | case | status | code |\n|---|---|---|---|\n${table.join("\n")}`);
  });
});

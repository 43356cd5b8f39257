/**
 * Issue 12, reliability scenarios 9 and 16: a battery of hostile or malformed
 * requests (tests/http/hostile-cases.ts), each with its expected status, run
 * through `app.request` and through a real server on loopback started with
 * this runtime's adapter (adapters/node.ts, bun.ts or deno.ts: the file runs
 * under every runtime). The quadratic read is sent 30 times: quick refusals,
 * the server stays up and the heap stays flat. 5xx answers are logged once
 * with the request id and without secrets.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createProcessor, FreshetError, type OnlineStore } from "../../mod.ts";
import { pushApp, type PushAppOptions } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryStore } from "../../plugins/stores/memory.ts";
import type { RunningServer } from "../../adapters/node.ts";
import repo from "./hostile-repo.ts";
import { type Answer, CASES, commonChecks, CONFIGS, type ConfigName, goodPush, type HostileRequest, quadraticRead, rawHttp, READ_TOKEN, SECRETS, viaFetch, WRITE_TOKEN } from "./hostile-cases.ts";

const g = globalThis as { Bun?: { gc(full: boolean): void }; Deno?: unknown };
const runtime = g.Bun ? "bun" : g.Deno ? "deno" : "node";

async function serveHere(app: { fetch: (r: Request) => Response | Promise<Response> }): Promise<RunningServer> {
  const adapter = runtime === "bun" ? await import("../../adapters/bun.ts") : runtime === "deno" ? await import("../../adapters/deno.ts") : await import("../../adapters/node.ts");
  return adapter.serve(app, { port: 0, hostname: "127.0.0.1" });
}

function build(config: ConfigName, logs: string[], extra: Partial<PushAppOptions> = {}) {
  const processor = createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters() });
  return pushApp({ processor, ...CONFIGS[config], logger: { error: (m) => void logs.push(m) }, ...extra });
}

/** Best effort: a full collection where the runtime offers one. */
async function collect(): Promise<void> {
  if (g.Bun) return g.Bun.gc(true);
  try {
    const v8 = await import("node:v8");
    const vm = await import("node:vm");
    v8.setFlagsFromString("--expose-gc");
    (vm.runInNewContext("gc") as () => void)();
  } catch {
    // no gc here: the bound below is loose enough without one
  }
}

for (const transport of ["app", "server"] as const) {
  describe(`hostile requests via ${transport === "app" ? "app.request" : `a real ${runtime} server on loopback`}`, () => {
    const logs: string[] = [];
    const servers: RunningServer[] = [];
    const senders = {} as Record<ConfigName, (req: HostileRequest) => Promise<Answer>>;
    before(async () => {
      for (const config of Object.keys(CONFIGS) as ConfigName[]) {
        const app = build(config, logs);
        if (transport === "app") {
          senders[config] = (req) => viaFetch((r) => app.request(r), req);
        } else {
          const server = await serveHere(app);
          servers.push(server);
          senders[config] = (req) => rawHttp(server.port, req);
        }
      }
    });
    after(async () => {
      for (const s of servers) await s.close();
    });

    const table: string[] = [];
    for (const c of CASES) {
      if (c.only && !c.only.includes(transport)) continue;
      it(`${c.name} -> ${c.expect.join(" or ")}`, async () => {
        const a = await senders[c.config](c.request());
        table.push(`| ${c.config} | ${c.name} | ${a.status} | ${a.status >= 400 && a.text.startsWith("{") ? (JSON.parse(a.text).error?.code ?? "") : ""} |`);
        assert.ok(c.expect.includes(a.status), `${c.name}: status ${a.status}, expected ${c.expect.join(" or ")}: ${a.text.slice(0, 300)}`);
        commonChecks(a, c.config);
        c.check?.(a);
      });
    }

    it("30 quadratic reads (5,000 x 5,000 refs): each refused quickly, the server stays up, the heap stays flat", { timeout: 60_000 }, async () => {
      const body = quadraticRead();
      const send = () => senders.open({ method: "POST", path: "/get-online-features", headers: { "content-type": "application/json" }, body });
      await send(); // warm up
      await collect();
      const before = process.memoryUsage().heapUsed;
      const answers: Answer[] = [];
      for (let i = 0; i < 10; i++) answers.push(await send());
      answers.push(...(await Promise.all(Array.from({ length: 20 }, send))));
      for (const a of answers) {
        assert.ok(a.status === 413 || a.status === 422, String(a.status));
        assert.ok(a.text.length < 2000);
      }
      const slowest = Math.max(...answers.map((a) => a.ms));
      assert.ok(slowest < 10_000, `slowest refusal took ${Math.round(slowest)} ms`);
      await collect();
      const grown = process.memoryUsage().heapUsed - before;
      assert.ok(grown < 64 * 1024 * 1024, `heap grew by ${Math.round(grown / 1048576)} MiB over 30 quadratic reads`);
      const health = await senders.open({ method: "GET", path: "/health" });
      assert.equal(health.status, 200, "still up");
      // The same server still serves a real read.
      assert.equal((await senders.open({ method: "POST", path: "/push", headers: { "content-type": "application/json" }, body: goodPush(2, "alive") })).status, 200);
      const got = await senders.open({ method: "POST", path: "/get-online-features", headers: { "content-type": "application/json" }, body: JSON.stringify({ entities: { user_id: ["alive0", "alive1"] }, features: ["activity:clicks"] }) });
      assert.deepEqual(JSON.parse(got.text).results[1].values, [1, 1]);
    });

    it("logged no 5xx and no secret for the whole battery", () => {
      assert.deepEqual(logs, []);
      if (process.env.HOSTILE_TABLE) console.log(`\n| config | case | status | code |\n|---|---|---|---|\n${table.join("\n")}`);
    });
  });
}

describe("pushApp: 5xx logging, request ids, option checks", () => {
  const failing = (fault: "read" | "write"): OnlineStore => {
    const inner = memoryStore();
    const boom = (): never => {
      if (fault === "write") throw new FreshetError("STORE_UNAVAILABLE", `connection to redis://:hunter2pass@db:6379 refused (Bearer ${WRITE_TOKEN})`);
      throw new Error(`disk on fire at redis://admin:hunter2pass@db:6379, token ${READ_TOKEN}`, { cause: new Error("EIO") });
    };
    return { ...inner, name: "failing", meta: inner.meta, read: fault === "read" ? () => Promise.resolve().then(boom) : inner.read, write: fault === "write" ? () => Promise.resolve().then(boom) : inner.write };
  };
  const appWith = (store: OnlineStore, logs: string[]) =>
    pushApp({ processor: createProcessor({ registry: repo, online: store, deadLetters: memoryDeadLetters() }), ...CONFIGS.auth, logger: { error: (m) => void logs.push(m) } });

  it("a 500 is logged once with the request id and the cause; the answer has the id, not the cause; no secret anywhere", async () => {
    const logs: string[] = [];
    const app = appWith(failing("read"), logs);
    const res = await app.request("/get-online-features", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${READ_TOKEN}`, "x-request-id": "req-abc-123" }, body: JSON.stringify({ entities: { user_id: ["u1"] }, features: ["activity:clicks"] }) });
    assert.equal(res.status, 500);
    assert.equal(res.headers.get("x-request-id"), "req-abc-123");
    const text = await res.text();
    assert.equal(JSON.parse(text).error.request_id, "req-abc-123");
    assert.doesNotMatch(text, /disk on fire|hunter2/);
    assert.equal(logs.length, 1, logs.join("\n"));
    assert.match(logs[0], /req-abc-123/);
    assert.match(logs[0], /disk on fire/);
    assert.match(logs[0], /EIO/, "and the cause of the cause");
    assert.doesNotMatch(logs[0], /hunter2pass/);
    for (const s of SECRETS) assert.ok(!logs[0].includes(s) && !text.includes(s));
  });

  it("a 503 is logged once with a generated request id, answered with Retry-After, and redacted", async () => {
    const logs: string[] = [];
    const app = appWith(failing("write"), logs);
    const res = await app.request("/push", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${WRITE_TOKEN}` }, body: goodPush() });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("retry-after"), "1");
    const rid = res.headers.get("x-request-id");
    assert.match(rid ?? "", /^[0-9a-f-]{36}$/);
    const text = await res.text();
    assert.equal(logs.length, 1);
    assert.ok(logs[0].includes(rid!));
    for (const s of [...SECRETS, "hunter2pass"]) assert.ok(!logs[0].includes(s) && !text.includes(s), `${s} leaked: ${logs[0]} / ${text}`);
    // The outage is said once, not once per request.
    for (let i = 0; i < 5; i++) {
      const again = await app.request("/push", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${WRITE_TOKEN}` }, body: goodPush() });
      assert.equal(again.status, 503);
    }
    assert.equal(logs.length, 1, logs.join("\n"));
    assert.match(logs[0], /store down: .*pushes and reads are answered 503/);
  });

  it("a hostile x-request-id is replaced, not echoed", async () => {
    const app = build("open", []);
    const res = await app.request("/health", { headers: { "x-request-id": "a\u0007b<script>" + "x".repeat(300) } });
    assert.match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  });

  it("refuses empty secrets and sizes that are not positive whole numbers", () => {
    const processor = createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters() });
    for (const bad of [{ writeToken: "" }, { readToken: " " }, { webhookSecret: "" }, { maxBodyBytes: Number("5MB") }, { maxReadBodyBytes: 0 }, { maxEntities: -1 }, { maxFeatureRefs: 1.5 }, { maxFeatureValues: Infinity }]) {
      assert.throws(() => pushApp({ processor, ...bad }), (e: Error) => e instanceof FreshetError && e.code === "INVALID_CONFIG", JSON.stringify(bad));
    }
  });

  it("the write token reads only when it is also the read token", async () => {
    const processor = createProcessor({ registry: repo, online: memoryStore(), deadLetters: memoryDeadLetters() });
    const app = pushApp({ processor, writeToken: "same-token-0123456789", readToken: "same-token-0123456789" });
    const res = await app.request("/registry", { headers: { authorization: "Bearer same-token-0123456789" } });
    assert.equal(res.status, 200);
  });

  it("caps are options: maxEntities, maxFeatureRefs, maxFeatureValues and maxReadBodyBytes", async () => {
    const app = build("open", [], { maxEntities: 2, maxFeatureRefs: 1, maxFeatureValues: 1, maxReadBodyBytes: 200 });
    const post = async (body: unknown) => (await app.request("/get-online-features", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }));
    assert.equal((await (await post({ entities: { user_id: [1, 2, 3] }, features: ["activity:clicks"] })).json()).error.code, "too_many_entities");
    assert.equal((await (await post({ entities: { user_id: [1] }, features: ["activity:clicks", "activity:page"] })).json()).error.code, "too_many_features");
    assert.equal((await (await post({ entities: { user_id: [1, 2] }, features: ["activity:clicks"] })).json()).error.code, "too_many_values");
    assert.equal((await post({ entities: { user_id: [1] }, features: ["activity:clicks"], pad: "x".repeat(300) })).status, 413);
    assert.equal((await post({ entities: { user_id: [1] }, features: ["activity:clicks"] })).status, 200);
  });
});

// @runtimes node
/**
 * The status page (issue 14) in headless Chromium, driven by playwright-core
 * (services.md): the page served by GET / asks for the read token, then
 * shows the registry, per view the records by outcome and the freshness, the
 * source lag and the latest dead letters, and follows a push and a stream
 * batch as it refreshes itself from GET /status. It loads nothing from
 * anywhere but the server.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chromium, type Browser, type Page } from "playwright-core";
import * as v from "valibot";
import { consume, createProcessor, entity, featureRepo, featureService, kafkaSource, pushSource, streamFeatureView } from "../../mod.ts";
import { serve, type RunningServer } from "../../adapters/node.ts";
import { pushApp } from "../../plugins/sources/push.ts";
import { memoryDeadLetters, memoryOffline, memoryStore } from "../../plugins/stores/memory.ts";
import { queueSource } from "../fixtures/queue-source.ts";
import { ensureBinary } from "../services/system.ts";

// Installed with apt-get when missing and root (npm test does it up front); otherwise the test fails saying what to install.
const CHROMIUM = ensureBinary("chromium", "chromium");
const READ_TOKEN = "status-read-token-0123";

const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const stats = streamFeatureView({
  name: "driver_hourly_stats",
  entities: [driver],
  source: pushSource({ name: "driver_stats_push_source", timestampField: "event_timestamp" }),
  ttl: "P1D",
  schema: v.object({ driver_id: v.number(), conv_rate: v.number(), event_timestamp: v.string() }),
});
const trips = streamFeatureView({
  name: "driver_trips",
  entities: [driver],
  source: kafkaSource({ name: "trips_stream", kafkaBootstrapServers: "127.0.0.1:9", topic: "trips", timestampField: "ts" }),
  ttl: 0,
  schema: v.object({ driver_id: v.number(), trips: v.number(), ts: v.number() }),
});
const repo = featureRepo({ project: "status_page", definitions: [stats, trips, featureService({ name: "driver_model", features: ["driver_hourly_stats:conv_rate", "driver_trips:trips"] })] });

const cell = (page: Page, table: string, rowText: string, column: number) =>
  page.evaluate(([t, r, c]) => {
    const row = [...document.querySelectorAll(`#${t} tbody tr`)].find((tr) => tr.textContent!.includes(r as string));
    return row ? row.children[c as number].textContent : null;
  }, [table, rowText, column] as const);

const waitFor = async (what: string, f: () => Promise<boolean>, ms = 10_000) => {
  const until = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe("status page in headless Chromium", () => {
  let browser: Browser;
  let server: RunningServer;
  let base: string;
  const ac = new AbortController();
  const processor = createProcessor({ registry: repo, online: memoryStore(), offline: memoryOffline(), deadLetters: memoryDeadLetters() });
  const stream = queueSource("trips_stream", { lag: { "0": 42, "1": 7 } });
  let consuming: Promise<void>;

  before(async () => {
    server = await serve(pushApp({ processor, readToken: READ_TOKEN }), { port: 0 });
    base = `http://127.0.0.1:${server.port}`;
    consuming = consume(stream.source, processor, { signal: ac.signal, logEveryMs: 200 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });
  after(async () => {
    await browser?.close();
    ac.abort();
    await consuming;
    await server?.close();
  });

  it("asks for the read token, then shows the registry and follows pushes, stream batches, lag and dead letters as it refreshes", async () => {
    const page = await browser.newPage();
    const requested: string[] = [];
    page.on("request", (r) => requested.push(r.url()));
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));

    // Behind the read token: the data endpoint refuses without it, and the page asks for it.
    assert.equal((await fetch(`${base}/status`)).status, 401);
    const res = await page.goto(`${base}/?refresh=300`);
    assert.equal(res!.status(), 200);
    assert.match(res!.headers()["content-security-policy"], /default-src 'none'/);
    await page.waitForSelector("#auth", { state: "visible" });
    assert.equal(await cell(page, "views", "driver_hourly_stats", 0), null, "no data before the token");
    await page.fill("#token", "wrong-token");
    await page.click("#auth button");
    await page.waitForFunction(() => document.getElementById("auth-error")!.textContent!.includes("not the read token"));
    await page.fill("#token", READ_TOKEN);
    await page.click("#auth button");
    await page.waitForSelector("#auth", { state: "hidden" });

    // The registry: views, their source and features, the feature service.
    assert.equal(await page.textContent("#project"), "status_page");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 1), "driver_stats_push_source");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 2), "conv_rate");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 3), "0");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 9), "-", "no event yet: no freshness");
    assert.equal(await cell(page, "services", "driver_model", 1), "driver_hourly_stats:conv_rate, driver_trips:trips");

    // A push of three rows (two for one driver: one of them stale) shows up on the next refresh.
    const t = Date.now() - 30_000;
    const push = await fetch(`${base}/push`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ push_source_name: "driver_stats_push_source", df: { driver_id: [1, 2, 1], conv_rate: [0.1, 0.2, 0.3], event_timestamp: [t, t, t - 1000].map((x) => new Date(x).toISOString()) } }),
    });
    assert.equal(push.status, 200, await push.text());
    await waitFor("written 2 on the page", async () => (await cell(page, "views", "driver_hourly_stats", 3)) === "2");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 4), "1", "stale");
    assert.equal(await cell(page, "views", "driver_hourly_stats", 8), new Date(t).toISOString(), "newest event");
    assert.match((await cell(page, "views", "driver_hourly_stats", 9))!, /^\d+(\.\d)? s$/, "freshness: the age of the newest event");

    // A stream batch with one bad record: written, invalid, the dead letter and the source's lag.
    let acked = 0;
    stream.send({
      records: [
        { value: JSON.stringify({ driver_id: 1, trips: 5, ts: Date.now() }), position: { kind: "memory", index: 0 } },
        { value: JSON.stringify({ driver_id: 2, trips: "many", ts: Date.now() }), position: { kind: "memory", index: 1 } },
      ],
      ack: async () => void acked++,
    });
    await waitFor("the stream batch on the page", async () => (await cell(page, "views", "driver_trips", 7)) === "1");
    assert.equal(await cell(page, "views", "driver_trips", 3), "1");
    assert.equal(acked, 1);
    await waitFor("the lag on the page", async () => (await cell(page, "sources", "trips_stream", 2)) === "0: 42, 1: 7");
    assert.equal(await cell(page, "dead-letters", "trips_stream", 2), "driver_trips");
    assert.equal(await cell(page, "dead-letters", "trips_stream", 3), "schema");
    assert.equal(await cell(page, "dead-letters", "trips_stream", 4), "trips");

    // Self-contained: every request went to this server (the page, then /status again and again).
    assert.ok(requested.filter((u) => u.endsWith("/status")).length >= 3, requested.join("\n"));
    for (const u of requested) assert.ok(u.startsWith(base + "/"), `the page requested ${u}`);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it("shows the data at once when the token comes in the URL fragment, which the server never sees", async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/?refresh=300#token=${READ_TOKEN}`);
    await page.waitForFunction(() => document.querySelector("#views tbody")!.textContent!.includes("driver_hourly_stats"));
    assert.equal(new URL(page.url()).hash, "", "the token is taken out of the address bar");
    await page.close();
  });
});

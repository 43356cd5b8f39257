// @runtimes node
/**
 * Safe by default, through the real `freshet` process: loopback unless told
 * otherwise, refusals at startup (exit 2, one line, how to fix it), tokens
 * end to end, `/registry` without secrets, and the dead-letter retention.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { request } from "node:http";
import { parseMetrics, root, startCli, sumMetric } from "../fixtures/cli-harness.ts";
import { SECRETS } from "../fixtures/secrets-repo.ts";
import { createHost } from "../../adapters/host.ts";
import { parseSize } from "../../adapters/size.ts";
import { isLoopbackAddress } from "../../adapters/settings.ts";

const REPO = "examples/driver_stats/feature_repo.ts";
const SECRETS_REPO = "tests/fixtures/secrets-repo.ts";
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "freshet-safe-"));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The FRESHET_* variables of the test's own environment must not leak into the child. */
const cleanEnv = (extra: Record<string, string> = {}) => {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("FRESHET_") || k === "PORT") delete env[k];
  return { ...env, ...extra } as Record<string, string>;
};
const cli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000, env: cleanEnv(env) });

/** Exit 2 and exactly one line on stderr, matching `pattern`; never a stack, never started. */
function refuses(args: string[], env: Record<string, string>, pattern: RegExp) {
  const r = cli(args, env);
  assert.equal(r.status, 2, `${args.join(" ")}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  assert.doesNotMatch(r.stdout, /serving project/, "it never started");
  return lines[0];
}

const json = { "content-type": "application/json" };
const pushBody = (id: number, trips = 42) => JSON.stringify({
  push_source_name: "driver_stats_push_source",
  df: { driver_id: [id], conv_rate: [0.5], acc_rate: [0.9], avg_daily_trips: [trips], event_timestamp: [new Date().toISOString()] },
  to: "online",
});
const readBody = (id: number) => JSON.stringify({ entities: { driver_id: [id] }, features: ["driver_hourly_stats:avg_daily_trips"] });

/** A request with a chosen Host header (fetch does not let one set it). */
function rawGet(port: number, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, headers: { host } }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("startup values", () => {
  it("sizes take SI and IEC units or bare bytes; anything else is refused", () => {
    assert.equal(parseSize("5242880"), 5242880);
    assert.equal(parseSize("5MB"), 5_000_000);
    assert.equal(parseSize("5MiB"), 5 * 1024 * 1024);
    assert.equal(parseSize("512kB"), 512_000);
    assert.equal(parseSize("512KiB"), 512 * 1024);
    assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
    assert.equal(parseSize(" 64 mib "), 64 * 1024 ** 2);
    assert.equal(parseSize("100b"), 100);
    assert.equal(parseSize("0.5kB"), 500);
    for (const bad of ["", "5XB", "-1", "0", "0MB", "1.5", "0.0001kB", "5 M B", "NaN", "Infinity", "1e6", "5MBB", "9007199254740993"]) assert.equal(parseSize(bad), undefined, bad);
  });
  it("loopback addresses", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "LOCALHOST"]) assert.ok(isLoopbackAddress(h), h);
    for (const h of ["0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "example.com", "127.0.0.1.example.com"]) assert.ok(!isLoopbackAddress(h), h);
  });
});

describe("freshet serve, safe by default", () => {
  it("refuses to start on a non-loopback address without credentials, saying how to add one or pass --open", () => {
    const dir = tempDir();
    const line = refuses(["serve", REPO, "--host", "0.0.0.0", "--port", "0", "--data-dir", dir], {}, /^\[freshet\] refusing to listen on 0\.0\.0\.0 without credentials/);
    assert.match(line, /FRESHET_WRITE_TOKEN and FRESHET_READ_TOKEN \(or --write-token\/--read-token, or --webhook-secret\), or pass --open \(FRESHET_OPEN=1\)/);
    refuses(["serve", REPO, "--port", "0", "--data-dir", dir], { FRESHET_HOST: "::" }, /refusing to listen on :: without credentials/);
    // consume serves the same app when it has a port.
    refuses(["consume", "examples/kafka_driver_stats/feature_repo.ts", "--host", "0.0.0.0", "--port", "0", "--data-dir", dir], {}, /refusing to listen on 0\.0\.0\.0 without credentials/);
  });

  it("refuses an empty secret or token, a bad size, an unknown flag and bad values, each with its one line", () => {
    const dir = tempDir();
    const serve = (...a: string[]) => ["serve", REPO, "--port", "0", "--data-dir", dir, ...a];
    refuses(serve(), { FRESHET_WEBHOOK_SECRET: "" }, /FRESHET_WEBHOOK_SECRET is set but empty, which would turn its protection off/);
    refuses(serve("--webhook-secret", " "), {}, /--webhook-secret is set but empty/);
    refuses(serve("--write-token", ""), {}, /--write-token is set but empty/);
    refuses(serve(), { FRESHET_READ_TOKEN: "" }, /FRESHET_READ_TOKEN is set but empty/);
    refuses(serve("--max-body", "5XB"), {}, /--max-body "5XB" is not a size: use bytes \(5242880\) or a unit, 5MB \(10\^6\), 5MiB \(2\^20\)/);
    refuses(serve(), { FRESHET_MAX_BODY_BYTES: "lots" }, /FRESHET_MAX_BODY_BYTES "lots" is not a size/);
    refuses(serve("--max-body", "0"), {}, /--max-body "0" is not a size/);
    refuses(serve("--dead-letter-max-bytes=-1"), {}, /--dead-letter-max-bytes "-1" is not a size/);
    refuses(serve("--dead-letter-max-bytes", "-1"), {}, /--dead-letter-max-bytes needs a value \(one that starts with "-" is written --dead-letter-max-bytes=<value>;/);
    refuses(serve("--dead-letter-keep", "0"), {}, /--dead-letter-keep "0" is not a whole number of at least 1/);
    refuses(serve("--prot", "8080"), {}, /^\[freshet\] unknown flag --prot; did you mean --port\? \(freshet --help lists the flags\)$/);
    refuses(serve("--webhook-secert", "whsec_x"), {}, /unknown flag --webhook-secert; did you mean --webhook-secret\?/);
    refuses(serve("--port"), {}, /--port needs a value/);
    refuses(serve("--open=yes"), {}, /--open is a switch and takes no value/);
    refuses(serve(), { FRESHET_OPEN: "maybe" }, /FRESHET_OPEN "maybe" is not a yes\/no value/);
    refuses(["serve", REPO, "--data-dir", dir], { FRESHET_PORT: "" }, /FRESHET_PORT is set but empty: give a port number \(0-65535\), or leave it unset/);
    refuses(serve("--cors-origins", "evil.example/path"), {}, /--cors-origins "evil\.example\/path" is not an origin list/);
    refuses(serve("--store", "redis:/127.0.0.1:6379"), {}, /unknown store URL "redis:\/127\.0\.0\.1:6379"/);
    refuses(["bogus", REPO], {}, /unknown command "bogus": use serve, consume, materialize, describe, replay, historical/);
  });

  it("a typo in a feature repo's options stops the command with exit 2 and a \"did you mean\"", () => {
    const dir = tempDir();
    const repoFile = join(dir, "feature_repo.ts");
    writeFileSync(join(dir, "package.json"), '{"type":"module"}');
    writeFileSync(repoFile, `import { featureRepo, kafkaSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
import { driver, driverHourlyStats } from ${JSON.stringify(join(root, REPO))};
const src = kafkaSource({ name: "trips", kafkaBootstrapServers: "127.0.0.1:9092", topic: "trips", timestampField: "event_timestamp", groupID: "my-group" } as never);
export default featureRepo({ project: "typo", definitions: [streamFeatureView({ name: "v", entities: [driver], source: src, schema: driverHourlyStats.schema, ttl: 0 })] });
`);
    refuses(["describe", repoFile], {}, /kafkaSource\(\) has no option "groupID"; did you mean "groupId"\?/);
    writeFileSync(repoFile, readFileSync(repoFile, "utf8").replace("groupID", "batchsize").replace('"my-group"', "5"));
    refuses(["consume", repoFile, "--data-dir", dir], {}, /kafkaSource\(\) has no option "batchsize"; did you mean "batchSize"\?/);
  });

  it("listens on loopback by default, and refuses requests for another Host (DNS rebinding) with 421", async () => {
    const dir = tempDir();
    const server = await startCli(["serve", REPO, "--port", "0", "--data-dir", dir, "--store", "memory:"], { env: cleanEnv() });
    try {
      assert.match(server.output(), /listening on 127\.0\.0\.1; loopback only, no credentials/);
      const base = `http://127.0.0.1:${server.port}`;
      assert.equal((await fetch(`${base}/health`)).status, 200);
      const push = await fetch(`${base}/push`, { method: "POST", headers: json, body: pushBody(1001) });
      assert.equal(push.status, 200, await push.text());
      const rebound = await rawGet(server.port, "/registry", `evil.example:${server.port}`);
      assert.equal(rebound.status, 421);
      assert.match(JSON.parse(rebound.body).error.message, /not a loopback name/);
      assert.equal((await rawGet(server.port, "/health", `localhost:${server.port}`)).status, 200);
      // Not reachable from another interface of this machine.
      const other = Object.values(networkInterfaces()).flat().find((i) => i && i.family === "IPv4" && !i.internal);
      if (other) await assert.rejects(fetch(`http://${other.address}:${server.port}/health`), "not listening on a non-loopback interface");
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it("--open serves on any address without credentials and without the Host check", async () => {
    const dir = tempDir();
    const server = await startCli(["serve", REPO, "--host", "0.0.0.0", "--port", "0", "--open", "--data-dir", dir, "--store", "memory:"], { env: cleanEnv() });
    try {
      assert.match(server.output(), /listening on 0\.0\.0\.0; open: no credentials/);
      const push = await fetch(`http://127.0.0.1:${server.port}/push`, { method: "POST", headers: json, body: pushBody(1001) });
      assert.equal(push.status, 200, await push.text());
      assert.equal((await rawGet(server.port, "/health", "features.example")).status, 200);
    } finally {
      await server.stop();
    }
    // FRESHET_OPEN=1 does the same.
    const viaEnv = await startCli(["serve", REPO, "--port", "0", "--data-dir", dir, "--store", "memory:"], { env: cleanEnv({ FRESHET_OPEN: "1", FRESHET_HOST: "0.0.0.0" }) });
    await viaEnv.stop();
  });

  it("tokens end to end: 401 without, 2xx with, each token for its scope; never printed", async () => {
    const dir = tempDir();
    const writeToken = "w-token-5f0c1e9a";
    const readToken = "r-token-83bd27c4";
    const server = await startCli(["serve", REPO, "--host", "0.0.0.0", "--port", "0", "--read-token", readToken, "--data-dir", dir, "--store", "memory:"], { env: cleanEnv({ FRESHET_WRITE_TOKEN: writeToken }) });
    try {
      const base = `http://127.0.0.1:${server.port}`;
      const as = (token?: string) => ({ ...json, ...(token ? { authorization: `Bearer ${token}` } : {}) });
      // Writes.
      assert.equal((await fetch(`${base}/push`, { method: "POST", headers: as(), body: pushBody(7) })).status, 401);
      assert.equal((await fetch(`${base}/push`, { method: "POST", headers: as(readToken), body: pushBody(7) })).status, 401, "the read token does not write");
      const pushed = await fetch(`${base}/push`, { method: "POST", headers: as(writeToken), body: pushBody(7, 12) });
      assert.equal(pushed.status, 200, await pushed.text());
      // Reads.
      const noRead = await fetch(`${base}/get-online-features`, { method: "POST", headers: as(), body: readBody(7) });
      assert.equal(noRead.status, 401);
      assert.match((await noRead.json()).error.message, /needs the read token/);
      assert.equal((await fetch(`${base}/get-online-features`, { method: "POST", headers: as(writeToken), body: readBody(7) })).status, 401, "the write token does not read");
      const read = await fetch(`${base}/get-online-features`, { method: "POST", headers: as(readToken), body: readBody(7) });
      assert.equal(read.status, 200);
      assert.deepEqual((await read.json()).results[1].values, [12]);
      for (const path of ["/registry", "/metrics"]) {
        assert.equal((await fetch(`${base}${path}`)).status, 401, path);
        assert.equal((await fetch(`${base}${path}`, { headers: as(readToken) })).status, 200, path);
      }
      assert.equal((await fetch(`${base}/health`)).status, 200, "/health stays open");
      // A token on a non-loopback listener lifts the Host check (the token is the protection).
      assert.equal((await rawGet(server.port, "/health", "features.example")).status, 200);
      assert.match(server.output(), /requires write token, read token/);
      assert.match(server.output(), /authorization: Bearer \$FRESHET_WRITE_TOKEN/, "the printed example reads the token from the environment");
    } finally {
      await server.stop();
    }
    assert.ok(!server.output().includes(writeToken) && !server.output().includes(readToken), "no token in the log");
  });

  it("GET /registry of a repo holding a TLS key, SASL and AWS credentials shows none of them, and repo-relative paths; nor do errors and logs", async () => {
    const dir = tempDir();
    const readToken = "r-token-0a9d";
    const server = await startCli(["serve", SECRETS_REPO, "--port", "0", "--read-token", readToken, "--data-dir", dir, "--store", "memory:"], { env: cleanEnv() });
    let text: string;
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/registry`, { headers: { authorization: `Bearer ${readToken}` } });
      assert.equal(res.status, 200);
      text = await res.text();
      // A bad push to the repo's push source: its error names no secret either.
      const bad = await fetch(`http://127.0.0.1:${server.port}/push`, { method: "POST", headers: json, body: JSON.stringify({ push_source_name: "rider_kafka", df: { rider_id: [1] } }) });
      assert.equal(bad.status, 422);
      text += await bad.text();
    } finally {
      await server.stop();
    }
    const described = cli(["describe", SECRETS_REPO]);
    assert.equal(described.status, 0, described.stderr);
    for (const [where, out] of [["/registry", text], ["freshet describe", described.stdout], ["the server log", server.output()]] as const) {
      for (const [name, secret] of Object.entries(SECRETS)) assert.ok(!out.includes(secret), `${where} shows ${name}`);
      assert.ok(!out.includes(root), `${where} shows an absolute path`);
    }
    // The consumers' errors and logs: a broker list with a password in it, and a Kinesis endpoint that refuses connections.
    const kafka = cli(["consume", SECRETS_REPO, "--source", "rider_events", "--store", "memory:", "--data-dir", dir]);
    assert.equal(kafka.status, 2, kafka.stdout + kafka.stderr);
    assert.match(kafka.stderr, /broker "\[redacted\]@127\.0\.0\.1:2" is not host:port \(credentials go in sasl/);
    const kinesis = await startCli(["consume", SECRETS_REPO, "--source", "rider_stream", "--port", "0", "--store", "memory:", "--data-dir", dir], { env: cleanEnv() });
    const deadline = Date.now() + 20_000;
    while (!/shard discovery failed.*retry 2/.test(kinesis.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await kinesis.stop();
    assert.match(kinesis.output(), /shard discovery failed/);
    for (const [where, out] of [["consume's errors", kafka.stdout + kafka.stderr], ["the Kinesis consumer's log", kinesis.output()]] as const) {
      for (const [name, secret] of Object.entries(SECRETS)) assert.ok(!out.includes(secret), `${where} shows ${name}`);
    }
    const registry = JSON.parse(text.slice(0, text.lastIndexOf("}{") + 1));
    const kafkaJson = registry.sources.find((s: { name: string }) => s.name === "rider_events");
    assert.deepEqual(kafkaJson.ssl, { ca: "[set]", key: "[redacted]", rejectUnauthorized: true });
    assert.deepEqual(kafkaJson.sasl, { mechanism: "scram-sha-256", username: "[redacted]", password: "[redacted]" });
    assert.equal(kafkaJson.batchSource.path, "tests/fixtures/data/rider_history.jsonl");
    assert.equal(registry.sources.find((s: { name: string }) => s.name === "rider_stream").credentials, "[redacted]");
  });
});

describe("dead-letter retention", () => {
  it("rotates the dead-letter file at --dead-letter-max-bytes, keeps --dead-letter-keep files, and logs what it deletes", () => {
    const dir = tempDir();
    // A batch source of invalid rows, each one a dead letter: three chunks of 5000, each over the size limit.
    const history = join(dir, "history.jsonl");
    const rows = Array.from({ length: 12_000 }, (_, i) => JSON.stringify({ driver_id: i, conv_rate: "not a number", acc_rate: 0.5, avg_daily_trips: 1, event_timestamp: "2026-11-20T01:00:00Z" }));
    writeFileSync(history, rows.join("\n") + "\n");
    const repoFile = join(dir, "feature_repo.ts");
    writeFileSync(join(dir, "package.json"), '{"type":"module"}');
    writeFileSync(repoFile, `import { featureRepo, fileSource, pushSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
import { driver, driverHourlyStats } from ${JSON.stringify(join(root, REPO))};
const src = pushSource({ name: "p", timestampField: "event_timestamp", batchSource: fileSource({ name: "h", path: ${JSON.stringify(history)}, timestampField: "event_timestamp" }) });
export default featureRepo({ project: "dlq", definitions: [driver, streamFeatureView({ name: "v", entities: [driver], source: src, schema: driverHourlyStats.schema, ttl: 0 })] });
`);
    const r = cli(["materialize", repoFile, "--data-dir", dir, "--dead-letter-max-bytes", "1MiB", "--dead-letter-keep", "2"], { FRESHET_OPEN: "0" });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /12000 invalid \(dead-lettered\)/);
    const files = readdirSync(dir).filter((f) => f.startsWith("dead-letters.jsonl")).sort();
    assert.deepEqual(files, ["dead-letters.jsonl", "dead-letters.jsonl.1"]);
    assert.match(r.stderr + r.stdout, /dead-letter retention deleted .*dead-letters\.jsonl\.1: 5000 dead letter\(s\), \d+ bytes \(keep 2 file\(s\) of 1048576 bytes/);
    assert.match(r.stderr + r.stdout, /\d+ record\(s\) dead-lettered to file since the last report \(schema \d+\)/, "dead letters are logged");
  });

  it("what the retention deletes is counted in /metrics", async () => {
    const dir = tempDir();
    const host = await createHost({ repo: REPO, store: "memory:", dataDir: dir, deadLetterMaxBytes: 2000, deadLetterKeep: 2, logger: { info() {}, warn() {}, error() {} } });
    try {
      const bad = (i: number) => ({ value: { driver_id: i, conv_rate: "x", acc_rate: 0.5, avg_daily_trips: 1, event_timestamp: new Date().toISOString() }, position: { kind: "push" as const, requestId: "r", index: i } });
      for (let i = 0; i < 40; i++) await host.processor.process("driver_stats_push_source", [bad(i)]);
      const res = await host.app.request("/metrics", { headers: { host: "localhost" } });
      const samples = parseMetrics(await res.text());
      const dropped = sumMetric(samples, "freshet_dead_letters_dropped_total", { sink: "file" });
      assert.ok(dropped > 0, "some letters were deleted and counted");
      assert.ok(sumMetric(samples, "freshet_dead_letter_files_dropped_total") >= 1);
      const kept = readdirSync(dir).filter((f) => f.startsWith("dead-letters.jsonl"))
        .reduce((n, f) => n + spawnSync("wc", ["-l", join(dir, f)], { encoding: "utf8" }).stdout.trim().split(/\s+/).map(Number)[0], 0);
      assert.equal(kept + dropped, 40, "every dead letter is kept or counted");
    } finally {
      await host.close();
    }
  });
});

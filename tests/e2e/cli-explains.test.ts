// @runtimes node machine-node
/** A CLI that explains itself: version and per-command help, one-line errors with a fix (never a stack), an unreachable store said plainly at startup, timestamped or JSON logs, a request log, and every flag in the README. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root, startCli } from "../fixtures/cli-harness.ts";
import { FLAGS } from "../../adapters/settings.ts";

const REPO = "examples/driver_stats/feature_repo.ts";
const cli = (...args: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...args], { cwd: root, encoding: "utf8", timeout: 60_000 });

/** A usage or configuration error: exit 2, one line on stderr, no stack trace. */
function oneLine(r: ReturnType<typeof cli>, pattern: RegExp): void {
  assert.equal(r.status, 2, `exit 2, got ${r.status}:\n${r.stdout}${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.match(lines[0], pattern);
}

describe("freshet explains itself", () => {
  it("--version prints the package's version; <command> --help lists that command's options only", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    for (const flag of ["--version", "-v"]) {
      const r = cli(flag);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^freshet ${pkg.version.replace(/\./g, "\\.")} \\(node \\d+\\.\\d+\\.\\d+\\)\\n$`));
    }
    const serve = cli("serve", "--help");
    assert.equal(serve.status, 0, serve.stderr);
    assert.match(serve.stdout, /^freshet serve <feature_repo\.ts>: HTTP push receiver/);
    assert.match(serve.stdout, /--write-token <t>\s+FRESHET_WRITE_TOKEN/);
    assert.doesNotMatch(serve.stdout, /--view|--source/, "materialize's and consume's flags are not serve's");
    const consume = cli("consume", "--help");
    assert.match(consume.stdout, /--source <name>/);
    assert.match(consume.stdout, /FRESHET_KAFKA_SESSION_TIMEOUT_MS/);
    assert.doesNotMatch(consume.stdout, /--max-body/);
    assert.match(cli("materialize", "-h").stdout, /--start <time>[\s\S]*--from-offline/);
  });

  it("every flag and environment variable of the CLI is in the README", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    for (const flag of Object.keys(FLAGS)) assert.ok(readme.includes(`--${flag}`), `README mentions --${flag}`);
    const cliSource = readFileSync(join(root, "adapters/cli.ts"), "utf8") + readFileSync(join(root, "adapters/settings.ts"), "utf8");
    for (const env of new Set(cliSource.match(/\b(FRESHET_[A-Z_]+|UPSTASH_REDIS_REST_TOKEN)\b/g))) assert.ok(readme.includes(env), `README mentions ${env}`);
  });

  it("a missing repo, a repo with a syntax error and a repo importing a missing package: exit 2, one line naming the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-repo-"));
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
    writeFileSync(join(dir, "syntax.ts"), "export default {\n  oops(\n");
    writeFileSync(join(dir, "imports.ts"), 'import x from "no-such-package-freshet";\nexport default x;\n');
    oneLine(cli("serve", join(dir, "missing.ts")), /feature repo .*missing\.ts not found \(looked for .*\): give the path of a module/);
    oneLine(cli("describe", join(dir, "syntax.ts")), /feature repo .*syntax\.ts failed to load: .* at .*syntax\.ts:3:0$/);
    oneLine(cli("consume", join(dir, "imports.ts")), /feature repo .*imports\.ts failed to load: Cannot find package 'no-such-package-freshet' .*\(install the package it imports/);
    oneLine(cli("serve", REPO, "--log-format", "xml"), /--log-format "xml" is not one of text, json/);
  });

  it("a port in use: exit 2, one line saying which and how to pick another", async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const dir = mkdtempSync(join(tmpdir(), "freshet-port-"));
      // spawnSync would block the event loop that holds the busy port open; that is fine for a listening socket.
      const r = cli("serve", REPO, "--port", String(port), "--data-dir", dir);
      oneLine(r, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is in use by another process: stop it, or pass --port <n>`));
    } finally {
      busy.close();
    }
  });

  it("an unreachable store is said at startup; /health answers 503 within a second; JSON log lines; a request log", { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-down-"));
    mkdirSync(dir, { recursive: true });
    // Port 1: nothing listens there, so every connection is refused.
    const server = await startCli(["serve", REPO, "--port", "0", "--data-dir", dir, "--store", "redis://127.0.0.1:1", "--log-format", "json", "--log-requests"]);
    try {
      const t = performance.now();
      const res = await fetch(`http://127.0.0.1:${server.port}/health`);
      const ms = performance.now() - t;
      assert.equal(res.status, 503);
      assert.ok(ms < 1000, `/health answered in ${Math.round(ms)} ms`);
      assert.equal((await res.json()).error.code, "store_unavailable");
      await new Promise((r) => setTimeout(r, 300));
      const lines = server.output().trim().split("\n").filter((l) => l.startsWith("{"));
      const parsed = lines.map((l) => JSON.parse(l) as { time: string; level: string; msg: string });
      for (const p of parsed) {
        assert.ok(!Number.isNaN(Date.parse(p.time)), p.time);
        assert.ok(["debug", "info", "warn", "error"].includes(p.level));
      }
      assert.ok(parsed.some((p) => p.level === "warn" && /store redis is unreachable at startup: .*redis:\/\/127\.0\.0\.1:1.*; starting anyway: pushes and reads answer 503/.test(p.msg)), server.output());
      assert.ok(parsed.some((p) => p.level === "info" && /^serving project "driver_stats"/.test(p.msg)), "no doubled [freshet] prefix");
      assert.ok(parsed.some((p) => new RegExp(`^status page: http://localhost:${server.port}/; metrics: /metrics; API: /openapi\\.json$`).test(p.msg)), server.output());
      assert.ok(parsed.some((p) => /^\[http\] GET \/health 503 \d+\.\d ms [0-9a-f-]{36}$/.test(p.msg)), server.output());
      assert.ok(parsed.some((p) => p.level === "warn" && /\[http\]: store down: /.test(p.msg)));
    } finally {
      await server.stop();
    }
  });

  it("a Kinesis consumer on Node before 22 says in one line that Node is end-of-life, not the AWS SDK's 8-line warning", { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-kinesis-"));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED")) as Record<string, string>;
    const consumer = await startCli(["consume", "tests/fixtures/secrets-repo.ts", "--source", "rider_stream", "--port", "0", "--store", "memory:", "--data-dir", dir], { env });
    const deadline = Date.now() + 20_000;
    while (!/shard discovery failed/.test(consumer.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await consumer.stop();
    const out = consumer.output();
    assert.match(out, /shard discovery failed/, "the consumer ran");
    assert.doesNotMatch(out, /NodeVersionSupportWarning|To continue receiving updates to AWS services/);
    const oldNode = Number(process.versions.node.split(".")[0]) < 22;
    const said = out.split("\n").filter((l) => /Node [\d.]+ is end-of-life: AWS SDK releases after January 2027 need Node 22/.test(l));
    assert.equal(said.length, oldNode ? 1 : 0, out);
  });
});

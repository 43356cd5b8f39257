// @runtimes node
// `freshet consume --application` (issue 13 item 10): two runs of one repo on
// one SQLite store, as two Kinesis applications, each read all 200 records of
// the stream (before, the second resumed from the first one's checkpoints and
// read none); a run of the first application again reads only what is new.
// Also the startup errors of the flag.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createStream } from "../services/kinesis.ts";
import { root, scrape, startCli, sumMetric } from "../fixtures/cli-harness.ts";
import { putAll, unique, until, useKinesisTestBed, versions } from "../sources/kinesis-fixtures.ts";

const bed = useKinesisTestBed();

function writeRepo(dir: string, stream: string, extra = ""): string {
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
  const path = join(dir, "feature_repo.ts");
  writeFileSync(path, `import * as v from "valibot";
import { entity, featureRepo, kinesisSource, kafkaSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
const driver = entity({ name: "driver", joinKeys: ["driver_id"] });
const schema = v.object({ driver_id: v.number(), version: v.number(), trips: v.number(), event_timestamp: v.number() });
const src = kinesisSource({ name: "driver_events", streamName: ${JSON.stringify(stream)}, endpoint: ${JSON.stringify(bed.svc.endpoint)}, region: "us-east-1",
  credentials: { accessKeyId: "a", secretAccessKey: "b" }, timestampField: "event_timestamp", pollIntervalMs: 50 });
const kafka = kafkaSource({ name: "kafka_events", kafkaBootstrapServers: "127.0.0.1:1", topic: "t", timestampField: "event_timestamp" });
${extra}
export default featureRepo({ project: "apps", definitions: [
  streamFeatureView({ name: "driver_stats", entities: [driver], source: src, schema, ttl: 0 }),
  streamFeatureView({ name: "kafka_stats", entities: [driver], source: kafka, schema, ttl: 0 }),
  ${extra ? `streamFeatureView({ name: "twin_stats", entities: [driver], source: twin, schema, ttl: 0 }),` : ""}
] });
`);
  return path;
}

describe("freshet consume --application", () => {
  it("two applications on one stream each read all 200 records through the CLI", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-apps-"));
    const stream = unique("cli-apps");
    await createStream(bed.client, stream, 2);
    const repo = writeRepo(dir, stream);
    await putAll(bed.client, stream, versions(20, 1, 10));
    const args = ["consume", repo, "--source", "driver_events", "--store", `sqlite:${join(dir, "online.db")}`, "--data-dir", join(dir, "data"), "--port", "0"];

    /** Runs `freshet consume` as `application` until it processed `expect` records, then a little longer, and returns how many it processed. */
    async function run(application: string, expect: number): Promise<number> {
      const cli = await startCli([...args, "--application", application]);
      let seen = 0;
      try {
        const processed = async () => (seen = sumMetric(await scrape(cli.port), "freshet_records_total", { source: "driver_events" }));
        await until(() => `${application} to process ${expect} records (${seen})\n${cli.output()}`, async () => (await processed()) >= expect, 30_000, 100);
        // Nothing more arrives later (a shared checkpoint would show as fewer, a lost one as more).
        await new Promise((r) => setTimeout(r, 500));
        await processed();
      } finally {
        assert.equal(await cli.stop(), 0, cli.output());
      }
      assert.match(cli.output(), new RegExp(`application ${application}\\): reading shardId-`), "the log names the application");
      return seen;
    }

    assert.equal(await run("app-a", 200), 200, "app-a reads every record");
    assert.equal(await run("app-b", 200), 200, "app-b reads every record too");
    await putAll(bed.client, stream, versions(20, 11, 11));
    assert.equal(await run("app-a", 20), 20, "app-a again reads only the 20 new records");
  });

  it("refuses a bad application name, one with no Kinesis source, and two sources sharing a stream's checkpoints (exit 2)", () => {
    const dir = mkdtempSync(join(tmpdir(), "freshet-apps-"));
    const repo = writeRepo(dir, "s", `const twin = kinesisSource({ name: "twin_events", streamName: "s", region: "us-east-1", timestampField: "event_timestamp" });`);
    const cli = (...a: string[]) => spawnSync(process.execPath, ["bin/freshet.mjs", ...a], { cwd: root, encoding: "utf8", timeout: 60_000, env: { ...process.env, FRESHET_KINESIS_APPLICATION: "" } });
    const common = ["--store", "memory:", "--data-dir", join(dir, "data")];
    const cases: [string[], RegExp][] = [
      [["consume", repo, "--application", "a/b", ...common], /^\[freshet\] --application "a\/b" is not an application name: use letters, digits/],
      [["consume", repo, "--source", "kafka_events", "--application", "x", ...common], /^\[freshet\] --application names a Kinesis application, and no Kinesis source is consumed here/],
      [["consume", repo, "--application", "x", ...common], /^\[freshet\] Kinesis sources "driver_events" and "twin_events" both read stream "s" as application "x", so they would share checkpoints/],
      [["serve", repo, "--application", "x", ...common], /^\[freshet\] --application applies to freshet consume only, not serve/],
    ];
    for (const [a, message] of cases) {
      const r = spawnSync(process.execPath, ["bin/freshet.mjs", ...a], { cwd: root, encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 2, `${a.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr.trim(), message);
      assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
    }
    const empty = cli("consume", repo, ...common);
    assert.equal(empty.status, 2, empty.stdout + empty.stderr);
    assert.match(empty.stderr, /FRESHET_KINESIS_APPLICATION "" is not an application name/);
  });
});

/**
 * Recovery time after a SIGKILL (issue 13 item 9): `freshet consume` of a
 * Kafka source on the mock cluster, into a SQLite store, while the bench
 * produces an event every 50 ms. A running consumer is SIGKILLed and a new
 * one started at once; the bench measures the time from that start to the
 * new process's first written record (its /metrics), and to its "joined
 * group" line. Once per session timeout given, `restarts` times each.
 *
 *   npx tsx bench/kafka-recovery.ts [--sessions default,4s] [--restarts 3] [--results bench/results]
 *
 * Not a P-id benchmark: it prints the times and appends them to
 * `<results>/kafka-recovery.txt`.
 */
import { appendFileSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Kafka, logLevel } from "kafkajs";
import { startKafka } from "../tests/services/kafka.ts";
import { root, scrape, startCli, sumMetric, type CliProcess } from "../tests/fixtures/cli-harness.ts";
import { machine, median, sleep, today, versions } from "./lib.ts";

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const sessions = opt("sessions", "default,4s").split(",");
const restarts = Number(opt("restarts", "3"));
const resultsDir = opt("results", join(root, "bench/results"));

const kafkaSvc = await startKafka();
const kafka = new Kafka({ brokers: kafkaSvc.brokers, logLevel: logLevel.NOTHING });
const producer = kafka.producer({ allowAutoTopicCreation: true });
await producer.connect();
const lines: string[] = [];
const say = (l: string) => {
  console.log(l);
  lines.push(l);
};

try {
  for (const session of sessions) {
    const dir = mkdtempSync(join(tmpdir(), "freshet-recovery-"));
    const topic = `recovery-${Date.now().toString(36)}`;
    symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir");
    const repo = join(dir, "feature_repo.ts");
    const timing = session === "default" ? "" : `, sessionTimeout: ${JSON.stringify(session)}`;
    writeFileSync(repo, `import * as v from "valibot";
import { entity, featureRepo, kafkaSource, streamFeatureView } from ${JSON.stringify(join(root, "mod.ts"))};
const src = kafkaSource({ name: "events", kafkaBootstrapServers: ${JSON.stringify(kafkaSvc.brokers)}, topic: ${JSON.stringify(topic)}, groupId: ${JSON.stringify(`g-${topic}`)}, timestampField: "ts", lingerMs: 50${timing} });
export default featureRepo({ project: "recovery", definitions: [src, streamFeatureView({ name: "events_by_seq", entities: [entity({ name: "event", joinKeys: ["seq"] })], source: src, ttl: 0,
  schema: v.object({ seq: v.number(), n: v.number(), ts: v.number() }) })] });
`);
    const args = ["consume", repo, "--store", `sqlite:${join(dir, "online.db")}`, "--data-dir", join(dir, "data"), "--port", "0"];
    let seq = 0;
    let producing = true;
    const trickle = (async () => {
      while (producing) {
        await producer.send({ topic, messages: [{ key: String(seq), value: JSON.stringify({ seq, n: seq, ts: Date.now() }) }] });
        seq++;
        await sleep(50);
      }
    })();
    const written = async (cli: CliProcess) => sumMetric(await scrape(cli.port).catch(() => []), "freshet_records_total", { outcome: "written" });
    const firstWrite = async (cli: CliProcess, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      while ((await written(cli)) === 0) {
        if (Date.now() > deadline) throw new Error(`no write within ${timeoutMs} ms\n${cli.output()}`);
        await sleep(50);
      }
      return Date.now();
    };
    const toWrite: number[] = [];
    const toJoin: number[] = [];
    let cli: CliProcess | undefined;
    try {
      cli = await startCli(args);
      await firstWrite(cli, 60_000);
      for (let i = 0; i < restarts; i++) {
        await sleep(1000);
        await cli!.child.stop("SIGKILL");
        const started = Date.now();
        let joinedAt = 0;
        cli = await startCli(args);
        const watch = setInterval(() => (joinedAt ||= /joined group/.test(cli!.output()) ? Date.now() : 0), 20);
        const at = await firstWrite(cli, 180_000);
        clearInterval(watch);
        joinedAt ||= at;
        toWrite.push(at - started);
        toJoin.push(joinedAt - started);
        const waits = cli.output().split("\n").filter((l) => l.includes("waiting for partition assignment")).length;
        say(`session ${session}: restart ${i + 1}: joined after ${((joinedAt - started) / 1000).toFixed(1)} s, first write after ${((at - started) / 1000).toFixed(1)} s (${waits} "waiting for partition assignment" lines)`);
      }
    } catch (e) {
      console.error(e);
      throw e;
    } finally {
      producing = false;
      await trickle;
      await cli?.stop().catch(() => {});
    }
    say(`session ${session}: restart to first write, median ${(median(toWrite) / 1000).toFixed(1)} s (min ${(Math.min(...toWrite) / 1000).toFixed(1)}, max ${(Math.max(...toWrite) / 1000).toFixed(1)}) over ${restarts} SIGKILLs; to the join ${(median(toJoin) / 1000).toFixed(1)} s`);
  }
} finally {
  await producer.disconnect();
  await kafkaSvc.stop();
}
appendFileSync(join(resultsDir, "kafka-recovery.txt"), `# ${today()}, ${machine()}, ${Object.entries(versions()).map(([k, v]) => `${k} ${v}`).join(", ")}\n${lines.join("\n")}\n\n`);
process.exit(0);

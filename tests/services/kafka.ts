// A Kafka-protocol cluster for tests: librdkafka's mock cluster, hosted by
// Debian's kcat (there is no real broker in npm or apt). The cluster lives as
// long as the kcat process; kcat itself just consumes a dummy topic.
//
// Quirks of the mock cluster (librdkafka 2.0.2), checked with kafkajs 2.2.4:
// - Topics are auto-created on first metadata/produce with 4 partitions.
//   admin.createTopics fails ("Broker 0 not found in the cached metadata"):
//   do not call it; just produce, or fetch metadata for the topic.
// - A consumer group's first join takes about 3 s (group initial rebalance
//   delay), so tests with consumer groups need timeouts well above that.
// - Each partition keeps a bounded log: past ~150k messages per topic the
//   oldest are dropped (low watermark rises). Keep test volume below that.
import { ensureBinary, startChild } from "./system.ts";

export interface KafkaService {
  /** "127.0.0.1:port" of each mock broker. */
  brokers: string[];
  stop(): Promise<void>;
  /** SIGKILL the whole cluster. */
  kill(): Promise<void>;
}

export async function startKafka(opts: { brokers?: number; timeoutMs?: number } = {}): Promise<KafkaService> {
  const bin = ensureBinary("kcat", "kcat");
  const { brokers: n = 3, timeoutMs = 15_000 } = opts;
  let resolveBrokers!: (b: string[]) => void;
  const found = new Promise<string[]>((r) => (resolveBrokers = r));
  // -b is ignored once the mock cluster is enabled; -d mock makes librdkafka
  // print "Mock cluster ... bootstrap.servers=H:P,H:P,H:P" on stderr. The
  // child helper keeps draining stderr afterwards: -d mock logs every request
  // and a full pipe would stall kcat and with it the whole cluster.
  const child = startChild(bin, ["-X", `test.mock.num.brokers=${n}`, "-d", "mock", "-C", "-t", "__keepalive", "-b", "127.0.0.1:1", "-q"], {
    onLine(line) {
      const m = /bootstrap\.servers=(\S+)/.exec(line);
      if (m) resolveBrokers(m[1].split(","));
    },
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`kcat mock cluster: no bootstrap.servers line after ${timeoutMs} ms\n${child.output()}`)), timeoutMs);
    child.proc.on("exit", (code, sig) => reject(new Error(`kcat exited (${code ?? sig}) before the mock cluster was up\n${child.output()}`)));
  });
  failed.catch(() => {}); // rejection after success must not be unhandled
  try {
    const brokers = await Promise.race([found, failed]);
    return { brokers, stop: () => child.stop("SIGTERM"), kill: () => child.stop("SIGKILL") };
  } catch (e) {
    await child.stop("SIGKILL");
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

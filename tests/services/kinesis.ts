// Kinesis API servers for tests. Both are pure-JS npm packages run as Node
// child processes (always with the machine's `node`, also when the test itself
// runs on Bun or Deno):
// - "kinesalite": small, fast to start, supports SplitShard/MergeShards.
// - "kinesis-local": etspaceman's kinesis-mock (what LocalStack uses), closer
//   to AWS in its validation and errors.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import process from "node:process";
import { CreateStreamCommand, DescribeStreamSummaryCommand, KinesisClient } from "@aws-sdk/client-kinesis";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { freePort, sleep, startChild, tcpProbe, waitFor, which } from "./system.ts";

export type KinesisKind = "kinesis-local" | "kinesalite";

export interface KinesisService {
  /** http://127.0.0.1:port (plain HTTP/1.1). */
  endpoint: string;
  kind: KinesisKind;
  stop(): Promise<void>;
  /** SIGKILL: the server and all its streams are gone. */
  kill(): Promise<void>;
}

const require = createRequire(import.meta.url);
const pkgDir = (name: string) => dirname(require.resolve(`${name}/package.json`));

export async function startKinesis(kind: KinesisKind = "kinesalite"): Promise<KinesisService> {
  const node = which("node") ?? process.execPath;
  const port = await freePort();
  const child =
    kind === "kinesalite"
      ? startChild(node, [
          join(pkgDir("kinesalite"), "cli.js"), "--port", String(port),
          // Streams stay CREATING/DELETING/UPDATING this long (default 500 ms).
          "--createStreamMs", "50", "--deleteStreamMs", "50", "--updateStreamMs", "50",
          "--shardLimit", "100",
        ])
      : startChild(node, ["main.js"], {
          // kinesis-mock loads its TLS certificate from server.json relative to
          // the working directory, so it must run from its own package folder.
          cwd: pkgDir("kinesis-local"),
          env: {
            KINESIS_MOCK_PLAIN_PORT: String(port),
            KINESIS_MOCK_TLS_PORT: String(await freePort()),
            CREATE_STREAM_DURATION: "50ms",
            DELETE_STREAM_DURATION: "50ms",
            MERGE_SHARDS_DURATION: "50ms",
            SPLIT_SHARD_DURATION: "50ms",
            UPDATE_SHARD_COUNT_DURATION: "50ms",
            SHARD_LIMIT: "100",
            LOG_LEVEL: process.env.KINESIS_LOG_LEVEL ?? "WARN",
          },
        });
  try {
    await waitFor(`${kind} on ${port}`, () => tcpProbe(port), { child: child.proc, output: child.output, timeoutMs: 30_000 });
  } catch (e) {
    await child.stop("SIGKILL");
    throw e;
  }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    kind,
    stop: () => child.stop("SIGTERM"),
    kill: () => child.stop("SIGKILL"),
  };
}

/**
 * An AWS SDK v3 Kinesis client for a local server. The SDK's default HTTP/2
 * handler gets "Protocol error" from both servers, so force HTTP/1.1.
 */
export function kinesisClient(endpoint: string): KinesisClient {
  return new KinesisClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "AKIDLOCAL", secretAccessKey: "local-secret" },
    requestHandler: new NodeHttpHandler(),
  });
}

/** CreateStream is asynchronous: create, then poll until the stream is ACTIVE. */
export async function createStream(client: KinesisClient, name: string, shards = 1, timeoutMs = 15_000): Promise<void> {
  await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: shards }));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const d = await client.send(new DescribeStreamSummaryCommand({ StreamName: name }));
    if (d.StreamDescriptionSummary?.StreamStatus === "ACTIVE") return;
    if (Date.now() > deadline) throw new Error(`stream ${name} not ACTIVE after ${timeoutMs} ms`);
    await sleep(50);
  }
}

// A small fake of Upstash's Redis REST API for tests. It implements only the
// HTTP protocol; every command runs on a real redis-server (startRedis), over
// a raw RESP connection, so results are exactly what Redis returns.
//
// Protocol (as used by @upstash/redis 1.39):
//   Authorization: Bearer <token>         else 401 {"error":"Unauthorized"}
//   POST /            ["SET","k","v"]     -> {"result": ...} | 400 {"error": "..."}
//   POST /pipeline    [[...],[...]]       -> [{"result"}|{"error"}, ...] in order, not atomic
//   POST /multi-exec  [[...],[...]]       -> same shape, run inside MULTI/EXEC
//   Upstash-Encoding: base64              -> every string in the result except "OK"
//                                            is base64 of the raw bytes (also in arrays)
// Integers are JSON numbers, nil is null, arrays nest. The path form
// (POST /set/k/v) is not implemented: @upstash/redis only uses paths for
// (p)subscribe streaming, which the fake does not support either.
//
// Fault injection for tests, through the returned `faults` object:
//   next429 > 0  -> answer 429 (then decrement)
//   next5xx > 0  -> answer status5xx (502 by default; then decrement)
//   maxRequestBytes -> larger bodies get 400 "ERR max request size exceeded"
//   down         -> every request gets 503 and the connection is closed
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import { Buffer } from "node:buffer";

// ---- minimal RESP2 client --------------------------------------------------

type Reply = Buffer | number | null | RedisError | Reply[];
class RedisError extends Error {}
class Incomplete extends Error {}

function encodeCommand(args: string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.from(a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/** Parse one reply at `pos`; throws Incomplete if `buf` does not hold it all yet. */
function parseReply(buf: Buffer, pos: number): [Reply, number] {
  const eol = buf.indexOf("\r\n", pos);
  if (eol < 0) throw new Incomplete();
  const line = buf.toString("utf8", pos + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[pos])) {
    case "+": return [buf.subarray(pos + 1, eol), next];
    case "-": return [new RedisError(line), next];
    case ":": return [Number(line), next];
    case "$": {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) throw new Incomplete();
      return [buf.subarray(next, next + len), next + len + 2];
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items: Reply[] = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const [r, q] = parseReply(buf, p);
        items.push(r);
        p = q;
      }
      return [items, p];
    }
    default:
      throw new Error(`bad RESP reply type ${JSON.stringify(String.fromCharCode(buf[pos]))}`);
  }
}

/**
 * One connection, pipelined: each batch of commands is written with a single
 * write() and Redis answers in order, so concurrent requests never interleave
 * (which is what keeps MULTI..EXEC batches atomic on a shared connection).
 * Reconnects lazily after the server went away.
 */
class RespConnection {
  private sock?: Socket;
  private ready?: Promise<Socket>;
  private buf: Buffer = Buffer.alloc(0);
  private waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];

  constructor(private host: string, private port: number) {}

  private open(): Promise<Socket> {
    if (this.ready) return this.ready;
    const ready = new Promise<Socket>((resolve, reject) => {
      const sock = connect({ host: this.host, port: this.port });
      sock.setNoDelay(true);
      sock.on("connect", () => { this.sock = sock; resolve(sock); });
      sock.on("data", (d: Buffer) => this.onData(d));
      const gone = (err?: Error) => {
        const e = err ?? new Error("connection to redis closed");
        if (this.ready === ready) { this.sock = undefined; this.ready = undefined; }
        this.buf = Buffer.alloc(0);
        for (const w of this.waiting.splice(0)) w.reject(e);
        reject(e);
      };
      sock.on("error", gone);
      sock.on("close", () => gone());
    });
    this.ready = ready;
    return ready;
  }

  private onData(d: Buffer) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let pos = 0;
    while (pos < this.buf.length && this.waiting.length) {
      let parsed: [Reply, number];
      try {
        parsed = parseReply(this.buf, pos);
      } catch (e) {
        if (e instanceof Incomplete) break;
        throw e;
      }
      pos = parsed[1];
      this.waiting.shift()!.resolve(parsed[0]);
    }
    this.buf = this.buf.subarray(pos);
  }

  async send(commands: string[][]): Promise<Reply[]> {
    const sock = await this.open();
    const replies = commands.map(() => new Promise<Reply>((resolve, reject) => this.waiting.push({ resolve, reject })));
    sock.write(Buffer.concat(commands.map(encodeCommand)));
    return Promise.all(replies);
  }

  close() {
    this.sock?.destroy();
  }
}

// ---- HTTP side ------------------------------------------------------------

export interface UpstashFaults {
  /** Answer this many next requests with 429. */
  next429: number;
  /** Answer this many next requests with `status5xx`. */
  next5xx: number;
  status5xx: number;
  /** Bodies larger than this get 400 "ERR max request size exceeded". */
  maxRequestBytes: number;
  /** When true every request gets 503 and its connection is closed. */
  down: boolean;
}

export interface UpstashService {
  /** Base URL for `new Redis({ url, token })`. */
  url: string;
  token: string;
  faults: UpstashFaults;
  /** Requests received, by path ("/", "/pipeline", "/multi-exec", ...), faults included. */
  requests: Record<string, number>;
  stop(): Promise<void>;
}

type Json = string | number | null | Json[] | { error: string };

/** Redis reply -> Upstash JSON result. Errors nested in arrays become strings. */
function toJson(r: Reply, base64: boolean): Json {
  if (r === null || typeof r === "number") return r;
  if (r instanceof RedisError) return r.message;
  if (Array.isArray(r)) return r.map((x) => toJson(x, base64));
  const s = r.toString("utf8");
  return base64 && s !== "OK" ? r.toString("base64") : s;
}

function entry(r: Reply, base64: boolean): { result: Json } | { error: string } {
  return r instanceof RedisError ? { error: r.message } : { result: toJson(r, base64) };
}

class BadRequest extends Error {}

/** A JSON command (["SET","k",1]) -> Redis arguments. */
function toArgs(cmd: unknown): string[] {
  if (!Array.isArray(cmd) || cmd.length === 0) throw new BadRequest("ERR command must be a non-empty JSON array");
  return cmd.map((a) => {
    if (typeof a === "string") return a;
    if (typeof a === "number" || typeof a === "boolean") return String(a);
    throw new BadRequest("ERR command arguments must be strings or numbers");
  });
}

export async function startUpstash(opts: { redisUrl: string; token?: string }): Promise<UpstashService> {
  const { hostname, port } = new URL(opts.redisUrl);
  const token = opts.token ?? "test-token";
  const redis = new RespConnection(hostname || "127.0.0.1", Number(port || 6379));
  const faults: UpstashFaults = { next429: 0, next5xx: 0, status5xx: 502, maxRequestBytes: 1_000_000, down: false };
  const requests: Record<string, number> = {};

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  };

  const readBody = (req: IncomingMessage) =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0].replace(/\/+$/, "") || "/";
    requests[path] = (requests[path] ?? 0) + 1;
    if (faults.down) {
      res.setHeader("Connection", "close");
      return send(res, 503, { error: "Service Unavailable" });
    }
    if (req.headers.authorization !== `Bearer ${token}`) return send(res, 401, { error: "Unauthorized" });
    const body = await readBody(req);
    if (faults.next429 > 0) {
      faults.next429--;
      return send(res, 429, { error: "ERR max daily request limit exceeded" });
    }
    if (faults.next5xx > 0) {
      faults.next5xx--;
      return send(res, faults.status5xx, { error: "Server Error" });
    }
    if (body.length > faults.maxRequestBytes) {
      return send(res, 400, { error: `ERR max request size exceeded. Limit: ${faults.maxRequestBytes} bytes` });
    }
    if (req.method !== "POST") return send(res, 405, { error: "Method Not Allowed" });
    const base64 = String(req.headers["upstash-encoding"] ?? "").toLowerCase() === "base64";

    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      return send(res, 400, { error: "ERR failed to parse command" });
    }
    try {
      if (path === "/") {
        const [r] = await redis.send([toArgs(parsed)]);
        return r instanceof RedisError ? send(res, 400, { error: r.message }) : send(res, 200, { result: toJson(r, base64) });
      }
      if (path === "/pipeline" || path === "/multi-exec") {
        if (!Array.isArray(parsed) || parsed.length === 0) throw new BadRequest("ERR pipeline must be a non-empty array of commands");
        const cmds = parsed.map(toArgs);
        if (path === "/pipeline") {
          const replies = await redis.send(cmds);
          return send(res, 200, replies.map((r) => entry(r, base64)));
        }
        const replies = await redis.send([["MULTI"], ...cmds, ["EXEC"]]);
        const exec = replies[replies.length - 1];
        // A command rejected while queueing aborts the whole transaction.
        if (exec instanceof RedisError || exec === null) {
          const queued = replies.slice(1, -1).find((r) => r instanceof RedisError) as RedisError | undefined;
          return send(res, 400, { error: queued?.message ?? (exec instanceof RedisError ? exec.message : "ERR transaction aborted") });
        }
        return send(res, 200, (exec as Reply[]).map((r) => entry(r, base64)));
      }
      return send(res, 404, { error: `ERR unknown path ${path}` });
    } catch (e) {
      if (e instanceof BadRequest) return send(res, 400, { error: e.message });
      // Redis itself is unreachable (stopped or killed by the test).
      return send(res, 500, { error: `ERR ${(e as Error).message}` });
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) send(res, 500, { error: `ERR ${(e as Error).message}` });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const addr = server.address();
  const httpPort = typeof addr === "object" && addr ? addr.port : 0;

  return {
    url: `http://127.0.0.1:${httpPort}`,
    token,
    faults,
    requests,
    async stop() {
      redis.close();
      // Keep-alive sockets from fetch() would hold close() open; drop them.
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

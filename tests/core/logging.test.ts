/** The operator's view: an outage said once and its end said once; log lines with a time and a level, folded when repeated. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { outageLog } from "../../core/outage.ts";
import { createLogger, type LogLevel } from "../../adapters/log.ts";

function recorder() {
  const lines: { level: string; msg: string }[] = [];
  const push = (level: string) => (msg: string) => void lines.push({ level, msg });
  return { lines, logger: { info: push("info"), warn: push("warn"), error: push("error") } };
}

describe("outageLog", () => {
  it("warns once when the store goes down, reminds at most every remindMs, and says once that it is back", () => {
    const { lines, logger } = recorder();
    let t = 0;
    const outage = outageLog(logger, '[kafka] "trips"', "source paused", { remindMs: 60_000, now: () => t });
    outage.ok();
    assert.equal(lines.length, 0, "nothing to say while all is well");
    for (let i = 0; i < 50; i++) {
      t += 1000;
      outage.failed(new Error("connect ECONNREFUSED 127.0.0.1:6379"));
    }
    assert.equal(outage.down, true);
    assert.deepEqual(lines, [{ level: "warn", msg: '[freshet] [kafka] "trips": store down: connect ECONNREFUSED 127.0.0.1:6379; source paused until it is back' }]);
    t += 11_000; // 60 s after the first failure
    outage.failed(new Error("connect ECONNREFUSED 127.0.0.1:6379"));
    assert.equal(lines.length, 2);
    assert.match(lines[1].msg, /store still down after 60 s \(51 failures\)/);
    t += 4000;
    outage.ok();
    outage.ok();
    assert.equal(lines.length, 3);
    assert.deepEqual(lines[2], { level: "info", msg: '[freshet] [kafka] "trips": store is back after 64 s (51 failures meanwhile)' });
    assert.equal(outage.down, false);
    outage.failed(new Error("again"));
    assert.match(lines[3].msg, /store down: again/, "a new outage is said again");
  });

  it("a success of an attempt that began before the outage does not end it", () => {
    const { lines, logger } = recorder();
    let t = 1000;
    const outage = outageLog(logger, '[kafka] "trips"', "source paused", { now: () => t });
    const earlier = t; // another partition's write, answered after this one failed
    t += 5;
    outage.failed(new Error("connect ECONNREFUSED 127.0.0.1:6379"));
    t += 5;
    outage.ok(earlier);
    assert.equal(outage.down, true, "still down");
    assert.equal(lines.length, 1);
    outage.ok(t);
    assert.equal(outage.down, false);
    assert.match(lines[1].msg, /store is back after 0 s \(1 failures meanwhile\)/);
  });
});

describe("createLogger", () => {
  const capture = (opts: Parameters<typeof createLogger>[0] = {}) => {
    const out: { level: LogLevel; line: string }[] = [];
    let t = Date.parse("2026-12-04T18:50:00.123Z");
    const log = createLogger({ ...opts, now: () => t, write: (level, line) => void out.push({ level, line }) });
    return { out, log, tick: (ms: number) => (t += ms) };
  };

  it("text lines carry an ISO timestamp and the level, and lose the doubled [freshet] prefix", () => {
    const { out, log } = capture();
    log.info("[freshet] [freshet] serving on http://localhost:8080");
    log.warn("careful", { port: 8080 });
    log.debug("hidden at the default level");
    assert.deepEqual(out, [
      { level: "info", line: "2026-12-04T18:50:00.123Z INFO  serving on http://localhost:8080" },
      { level: "warn", line: '2026-12-04T18:50:00.123Z WARN  careful {"port":8080}' },
    ]);
  });

  it("json lines parse, one object a line", () => {
    const { out, log } = capture({ format: "json", level: "debug" });
    log.error("[freshet] [http] request r1 answered 503", new Error("boom"));
    log.debug("detail");
    const first = JSON.parse(out[0].line);
    assert.equal(first.time, "2026-12-04T18:50:00.123Z");
    assert.equal(first.level, "error");
    assert.match(first.msg, /^\[http\] request r1 answered 503 Error: boom/);
    assert.deepEqual(JSON.parse(out[1].line), { time: "2026-12-04T18:50:00.123Z", level: "debug", msg: "detail" });
  });

  it("folds a burst of identical lines into one line and a count", () => {
    const { out, log, tick } = capture();
    for (let i = 0; i < 6; i++) {
      log.warn('[freshet] [kafka] "trips": broker connection lost');
      tick(100);
    }
    assert.equal(out.length, 1);
    log.info("something else");
    assert.equal(out.length, 3);
    assert.match(out[1].line, /WARN  \[kafka\] "trips": broker connection lost \(repeated 5 more times\)$/);
    tick(20_000);
    log.info("something else");
    assert.equal(out.length, 4, "the same line again after the fold window is written");
  });
});

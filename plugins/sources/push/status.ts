/**
 * @module
 * The status page: `GET /status` (JSON) and `GET /` (a small self-contained
 * HTML page, inline CSS and JS, no CDN, that renders `/status` and fetches
 * it again every few seconds).
 */
import type { Processor } from "../../../core/index.ts";
import type { Status } from "./schemas.ts";

const OUTCOMES = ["written", "stale", "expired", "late", "invalid"] as const;

/** What `GET /status` answers, from the processor's metrics and its latest dead letters. */
export function statusOf(processor: Processor, now: number = Date.now()): Status {
  const { registry, metrics } = processor;
  const newest = new Map(metrics.series("freshet_view_newest_event_seconds").map((s) => [s.labels.view, s.value * 1000]));
  const lag = metrics.series("freshet_source_lag");
  const rate = new Map(metrics.series("freshet_source_events_per_second").map((s) => [s.labels.source, s.value]));
  return {
    project: registry.project,
    store: processor.online?.name ?? null,
    generated_at: new Date(now).toISOString(),
    views: [...registry.views.values()].map((view) => {
      const t = newest.get(view.name);
      const records = Object.fromEntries(OUTCOMES.map((o) => [o, metrics.sum("freshet_records_total", { view: view.name, outcome: o })])) as Record<(typeof OUTCOMES)[number], number>;
      return {
        name: view.name,
        source: view.source.name,
        entities: view.entities.map((e) => e.name),
        features: [...(view.aggregations?.length ? view.aggregations.map((a) => a.name) : view.features)],
        online: view.online,
        offline: view.offline,
        records,
        newest_event_time: t === undefined ? null : new Date(t).toISOString(),
        freshness_seconds: t === undefined ? null : Math.max(0, (now - t) / 1000),
      };
    }),
    sources: [...registry.sources.values()].map((s) => ({
      name: s.name,
      kind: s.kind,
      duplicates: metrics.sum("freshet_records_total", { source: s.name, outcome: "duplicate" }),
      lag: lag.filter((l) => l.labels.source === s.name).map((l) => ({ partition: l.labels.partition, value: l.value })),
      events_per_second: rate.get(s.name) ?? null,
    })),
    feature_services: [...registry.featureServices.values()].map((fs) => ({ name: fs.name, features: [...fs.features] })),
    dead_letters: processor.recentDeadLetters().reverse().map((d) => ({ at: d.at, source: d.source, view: d.view, reason: d.reason, message: d.message, path: d.path, payload: d.payload })),
  };
}

/** The page. It holds no data: everything comes from `GET /status`, with the read token when the server has one. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Freshet status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; background: #fafbfc; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
  table { border-collapse: collapse; background: #fff; } th, td { border: 1px solid #d6dbe1; padding: .25rem .55rem; text-align: left; vertical-align: top; }
  th { background: #eef1f4; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
  .muted { color: #667; } .bad { color: #b00020; } .ok { color: #0a7a32; } code { font-size: 12px; }
  #auth { display: none; margin: 1rem 0; } #auth input { width: 22rem; }
</style>
</head>
<body>
<h1>Freshet <span id="project"></span></h1>
<div class="muted">store <span id="store">-</span> &middot; updated <span id="updated">never</span> <span id="state"></span></div>
<form id="auth"><label>Read token <input id="token" type="password" autocomplete="off"></label> <button>Show</button> <span class="bad" id="auth-error"></span></form>
<h2>Feature views</h2>
<table id="views"><thead><tr><th>view</th><th>source</th><th>features</th><th>written</th><th>stale</th><th>expired</th><th>late</th><th>invalid</th><th>newest event</th><th>freshness</th></tr></thead><tbody></tbody></table>
<h2>Sources</h2>
<table id="sources"><thead><tr><th>source</th><th>kind</th><th>lag</th><th>events/s</th><th>duplicates</th></tr></thead><tbody></tbody></table>
<h2>Feature services</h2>
<table id="services"><thead><tr><th>service</th><th>features</th></tr></thead><tbody></tbody></table>
<h2>Latest dead letters</h2>
<table id="dead-letters"><thead><tr><th>at</th><th>source</th><th>view</th><th>reason</th><th>field</th><th>message</th></tr></thead><tbody></tbody></table>
<script>
(() => {
  const every = Math.max(250, Number(new URLSearchParams(location.search).get("refresh")) || 2000);
  // The token never goes into a URL the server sees: a #token=... fragment, or typed in, kept for this tab only.
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) { sessionStorage.setItem("freshet-read-token", fromHash); history.replaceState(null, "", location.pathname + location.search); }
  const $ = (id) => document.getElementById(id);
  const text = (v) => document.createTextNode(v === null || v === undefined ? "-" : String(v));
  const row = (cells) => { const tr = document.createElement("tr"); for (const c of cells) { const td = document.createElement("td"); if (typeof c === "number") td.className = "n"; td.append(text(c)); tr.append(td); } return tr; };
  const fill = (id, rows) => { const body = $(id).tBodies[0]; body.replaceChildren(...(rows.length ? rows.map(row) : [row(["none"])])); };
  const age = (s) => s === null ? "-" : s < 120 ? s.toFixed(1) + " s" : s < 7200 ? (s / 60).toFixed(1) + " min" : s < 172800 ? (s / 3600).toFixed(1) + " h" : (s / 86400).toFixed(1) + " d";
  const render = (st) => {
    $("project").textContent = st.project;
    $("store").textContent = st.store ?? "none";
    $("updated").textContent = new Date(st.generated_at).toLocaleTimeString();
    fill("views", st.views.map((v) => [v.name, v.source, v.features.join(", "), v.records.written, v.records.stale, v.records.expired, v.records.late, v.records.invalid, v.newest_event_time, age(v.freshness_seconds)]));
    fill("sources", st.sources.map((s) => [s.name, s.kind, s.lag.length ? s.lag.map((l) => l.partition + ": " + l.value).join(", ") : "-", s.events_per_second, s.duplicates]));
    fill("services", st.feature_services.map((f) => [f.name, f.features.join(", ")]));
    fill("dead-letters", st.dead_letters.map((d) => [d.at, d.source, d.view, d.reason, d.path, d.message]));
  };
  let timer;
  const load = async () => {
    clearTimeout(timer);
    const token = sessionStorage.getItem("freshet-read-token");
    try {
      const res = await fetch("status", { headers: token ? { authorization: "Bearer " + token } : {}, cache: "no-store" });
      if (res.status === 401) {
        $("auth").style.display = "block";
        $("auth-error").textContent = token ? "that token is not the read token" : "";
        $("state").textContent = "(needs the read token)";
        return;
      }
      if (!res.ok) throw new Error("GET /status answered " + res.status);
      $("auth").style.display = "none";
      render(await res.json());
      $("state").textContent = "";
      $("state").className = "ok";
    } catch (e) {
      $("state").textContent = "(" + e.message + "; retrying)";
      $("state").className = "bad";
    }
    timer = setTimeout(load, every);
  };
  $("auth").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("freshet-read-token", $("token").value.trim()); load(); });
  load();
})();
</script>
</body>
</html>
`;

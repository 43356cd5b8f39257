/**
 * @module
 * Aggregate features in historical retrieval: for an entity row at time t,
 * each aggregation's value over the logged events of its view with event
 * time in the window's tile-aligned start (as {@link windowRange} at t) up
 * to t itself, folded with the same tile functions as online
 * ({@link initialState}, {@link mergeState}, {@link finalizeState}). That is
 * what an online read at t answers when every event had arrived by its event
 * time; events after t never leak in, even inside t's own tile.
 *
 * One pass over the log, in any order, with bounded memory: per entity of
 * the entity rows, one partial state per segment, a segment being a tile cut
 * at that entity's row times (the events of a tile between two row times
 * fold into one state). last, lastN and lastDistinctN keep at most n
 * candidate events per segment with their append order (`logSeq`), folded in
 * that order at the end, so ties of (event time, created time) go to the one
 * appended first, as online. A row logged again by an at-least-once
 * redelivery (same source position, entity, times and values) counts once,
 * as the applied marks make it count online.
 */
import { distinctKey, finalizeState, hllAdd, initialState, mergeState, type PartialState, type ResolvedAggregation, tileIndex, windowRange } from "./aggregations.ts";
import type { AsOfEntity, FeatureRow, Row } from "./contracts.ts";
import type { FeatureView } from "./definitions.ts";

const VERSIONED = new Set(["last", "lastN", "lastDistinctN"]);

/** A candidate of last/lastN/lastDistinctN: the event's value and version, its append order, its replay key. */
interface Candidate {
  value: unknown;
  eventTime: number;
  createdTime: number | null;
  seq: string;
  dup?: string;
}

interface Segment {
  s: Record<string, PartialState>;
  c: Record<string, Candidate[]>;
}

interface EntityPlan {
  /** The entity's distinct row times, ascending. */
  times: number[];
  /** The earliest event time any of its rows' windows covers. */
  from: number;
  /** Its latest row time. */
  to: number;
  /** Per slide size, segments by id: tile index * (times + 1) + how many row times are below the event. */
  groups: Map<number, Map<number, Segment>>;
  /** Replay keys seen, with the smallest append order. */
  seen: Map<string, string>;
}

/** Candidate a is better than b: newer (event time, created time), or equal and appended first. */
function better(a: Candidate, b: Candidate): boolean {
  if (a.eventTime !== b.eventTime) return a.eventTime > b.eventTime;
  const ac = a.createdTime ?? -Infinity, bc = b.createdTime ?? -Infinity;
  if (ac !== bc) return ac > bc;
  return a.seq < b.seq;
}

function lowerBound(xs: number[], x: number): number {
  let lo = 0, hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Keeps the best n candidates (distinct values only, for lastDistinctN). */
function offer(a: ResolvedAggregation, list: Candidate[], c: Candidate): void {
  const n = a.function === "last" ? 1 : a.n!;
  if (a.function === "lastDistinctN") {
    const k = distinctKey(c.value);
    const at = list.findIndex((x) => distinctKey(x.value) === k);
    if (at >= 0) {
      if (!better(c, list[at])) return;
      list.splice(at, 1);
    }
  }
  let i = list.length;
  while (i > 0 && better(c, list[i - 1])) i--;
  if (i >= n) return;
  list.splice(i, 0, c);
  if (list.length > n) list.length = n;
}

/**
 * The aggregations `names` of `view` at each entity's time, from the logged
 * rows (any order, in chunks, read once). Entities with an equal key share
 * the work; the answer is in the order of `entities`.
 *
 * @example
 * ```ts
 * const values = await aggregateAsOf(view, ["sum_amount_3600s"], [{ entityKey: "user_id=1", time: Date.now() }], offline.read(view, {}))
 * ```
 */
export async function aggregateAsOf(view: Pick<FeatureView, "aggregations">, names: string[], entities: AsOfEntity[], rows: AsyncIterable<FeatureRow[]> | Iterable<FeatureRow[]>, onRows?: (n: number) => void): Promise<Row[]> {
  const aggs = names.map((name) => view.aggregations!.find((a) => a.name === name)!);
  const slides = [...new Set(aggs.map((a) => a.slideMs))];
  const plans = new Map<string, EntityPlan>();
  for (const e of entities) {
    let p = plans.get(e.entityKey);
    if (!p) plans.set(e.entityKey, p = { times: [], from: Infinity, to: -Infinity, groups: new Map(slides.map((s) => [s, new Map()])), seen: new Map() });
    p.times.push(e.time);
    for (const a of aggs) p.from = Math.min(p.from, windowRange(a, e.time).start);
    p.to = Math.max(p.to, e.time);
  }
  for (const p of plans.values()) p.times = [...new Set(p.times)].sort((x, y) => x - y);

  let seen = 0;
  let order = 0;
  for await (const chunk of rows as AsyncIterable<FeatureRow[]>) {
    for (const r of chunk) {
      const p = plans.get(r.entityKey);
      if (!p || r.eventTime < p.from || r.eventTime > p.to) continue;
      const seq = r.logSeq ?? `~${String(order++).padStart(12, "0")}`;
      let dup: string | undefined;
      if (r.position) {
        dup = JSON.stringify([r.position, r.eventTime, r.createdTime ?? null, aggs.map((a) => r.values[a.column] ?? null)]);
        const had = p.seen.get(dup);
        if (had !== undefined) {
          // A replay: counted once, with the earlier append order.
          if (seq < had) {
            p.seen.set(dup, seq);
            for (const group of p.groups.values()) for (const seg of group.values()) for (const list of Object.values(seg.c)) for (const c of list) if (c.dup === dup) c.seq = seq;
          }
          continue;
        }
        p.seen.set(dup, seq);
      }
      const below = lowerBound(p.times, r.eventTime);
      for (const slideMs of slides) {
        const id = tileIndex(slideMs, r.eventTime) * (p.times.length + 1) + below;
        const group = p.groups.get(slideMs)!;
        let seg = group.get(id);
        for (const a of aggs) {
          if (a.slideMs !== slideMs) continue;
          const value = r.values[a.column];
          if (value === null || value === undefined) continue;
          if (!seg) group.set(id, seg = { s: {}, c: {} });
          if (VERSIONED.has(a.function)) offer(a, seg.c[a.name] ??= [], { value, eventTime: r.eventTime, createdTime: r.createdTime ?? null, seq, dup });
          else if (a.function === "count_distinct" && seg.s[a.name] !== undefined) seg.s[a.name] = hllAdd(seg.s[a.name] as never, value);
          else {
            const m = mergeState(a, seg.s[a.name], initialState(a, value, r.eventTime, r.createdTime));
            if (m !== undefined) seg.s[a.name] = m;
          }
        }
      }
    }
    seen += chunk.length;
    onRows?.(seen);
  }

  const answers = new Map<string, Map<number, Row>>();
  for (const [key, p] of plans) {
    p.seen.clear();
    const byTime = new Map<number, Row>();
    for (const t of p.times) byTime.set(t, {});
    for (const slideMs of slides) {
      const group = p.groups.get(slideMs)!;
      const ids = [...group.keys()].sort((x, y) => x - y);
      const segs = ids.map((id) => group.get(id)!);
      // The candidates of each segment fold in append order, through the tile functions.
      for (const seg of segs) {
        for (const [name, list] of Object.entries(seg.c)) {
          const a = aggs.find((x) => x.name === name)!;
          let state: PartialState | undefined;
          for (const c of [...list].sort((x, y) => (x.seq < y.seq ? -1 : x.seq > y.seq ? 1 : 0))) state = mergeState(a, state, initialState(a, c.value, c.eventTime, c.createdTime ?? undefined));
          if (state !== undefined) seg.s[name] = state;
        }
        seg.c = {};
      }
      const span = p.times.length + 1;
      for (const a of aggs) {
        if (a.slideMs !== slideMs) continue;
        for (let j = 0; j < p.times.length; j++) {
          const t = p.times[j];
          const lo = a.windowMs === undefined ? -Infinity : tileIndex(slideMs, windowRange(a, t).start) * span;
          // Events at or before t: in t's tile, at most j row times below them (an event after t has t below it too).
          const hi = tileIndex(slideMs, t) * span + j;
          let state: PartialState | undefined;
          for (let i = lowerBound(ids, lo); i < ids.length && ids[i] <= hi; i++) {
            const st = segs[i].s[a.name];
            if (st !== undefined) state = mergeState(a, state, st);
          }
          byTime.get(t)![a.name] = finalizeState(a, state) as Row[string];
        }
      }
    }
    answers.set(key, byTime);
  }
  return entities.map((e) => answers.get(e.entityKey)!.get(e.time)!);
}

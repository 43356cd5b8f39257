/**
 * @module
 * Avro messages with the `avsc` package: plain Avro (one schema, no header)
 * or the Confluent wire format (magic byte 0, a 4-byte big-endian schema id,
 * then the Avro body), with writer schemas given by id or fetched from a
 * Confluent schema registry. `avsc` is loaded on the first decode.
 *
 * Longs decode to JS numbers (a long beyond 2^53 is a decode error rather
 * than a silently rounded value), so `timestamp-millis` fields arrive as
 * epoch milliseconds, which the processor's event-time parsing accepts.
 *
 * @example
 * ```ts
 * import { avroFormat } from "freshet/formats/avro"
 * const format = avroFormat({ schemas: { 1: tripSchema }, registryUrl: "http://registry:8081" })
 * ```
 */
import { Buffer } from "node:buffer";
import type { Resolver, Schema, Type } from "avsc";
import { FreshetError, missingPackage } from "../../core/errors.ts";
import type { Format } from "../../core/contracts.ts";

/** An Avro schema: the parsed JSON object (or its JSON text). */
export type AvroSchema = object | string;

/**
 * Options of {@link avroFormat}. Give `schema` alone for plain Avro; give
 * `schemas` and/or `registryUrl` for the Confluent wire format. With both,
 * each message is decoded with its writer schema (by id) and resolved into
 * `schema` as the reader schema (Avro schema evolution).
 *
 * @example
 * ```ts
 * const opts: AvroFormatOptions = { schemas: { 7: { type: "record", name: "Trip", fields: [{ name: "driver_id", type: "long" }] } } }
 * ```
 */
export interface AvroFormatOptions {
  /** Plain Avro: every message is one datum of this schema, with no header. With `schemas`/`registryUrl`: the reader schema. */
  schema?: AvroSchema;
  /** Confluent wire format: writer schemas by schema id. */
  schemas?: Record<number, AvroSchema>;
  /** A Confluent schema registry, asked for ids not in `schemas` (`GET /schemas/ids/{id}`), cached once found. */
  registryUrl?: string;
  /** Headers for the registry, e.g. `{ authorization: "Basic ..." }`. */
  registryHeaders?: Record<string, string>;
  /** The fetch used for the registry. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

type Avsc = typeof import("avsc");

let avscModule: Promise<Avsc> | undefined;
// avsc is CommonJS; runtimes differ in whether its exports sit on `default`.
const loadAvsc = () =>
  (avscModule ??= import("avsc").catch(missingPackage("avsc", "the Avro format", "avro")).then((m) => ((m as unknown as { default?: Avsc }).default ?? m) as Avsc));

/** The writer type of a schema id, with the resolver into the reader schema when there is one. */
interface Decoder {
  type: Type;
  resolver?: Resolver;
  reader?: Type;
}

/**
 * The Avro format.
 *
 * A message that cannot be decoded throws an error that says why (a magic
 * byte other than 0, fewer than 5 header bytes, an unknown schema id,
 * a truncated body, trailing bytes), and the processor dead-letters it.
 *
 * @example
 * ```ts
 * const plain = avroFormat({ schema: { type: "record", name: "Trip", fields: [{ name: "driver_id", type: "long" }] } })
 * const confluent = avroFormat({ schemas: { 1: tripV1, 2: tripV2 }, schema: tripV2 })
 * ```
 */
export function avroFormat(opts: AvroFormatOptions): Format {
  const framed = opts?.schemas !== undefined || opts?.registryUrl !== undefined;
  if (!opts || (!framed && opts.schema === undefined)) {
    throw new FreshetError("INVALID_CONFIG", "avroFormat needs `schema` (plain Avro), or `schemas` by id and/or `registryUrl` (Confluent wire format)", { plugin: "avro" });
  }
  const parse = (s: AvroSchema, what: string): Schema => {
    if (typeof s === "string") {
      try {
        return JSON.parse(s) as Schema;
      } catch (e) {
        throw new FreshetError("INVALID_CONFIG", `${what} is not valid JSON: ${(e as Error).message}`, { plugin: "avro" });
      }
    }
    if (s === null || typeof s !== "object") throw new FreshetError("INVALID_CONFIG", `${what} must be an Avro schema object or its JSON text`, { plugin: "avro" });
    return s as Schema;
  };
  const readerSchema = opts.schema === undefined ? undefined : parse(opts.schema, "schema");
  const given = new Map<number, Schema>();
  for (const [id, s] of Object.entries(opts.schemas ?? {})) {
    const n = Number(id);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new FreshetError("INVALID_CONFIG", `schemas: "${id}" is not a schema id (an integer from 0 to 2^32-1)`, { plugin: "avro" });
    given.set(n, parse(s, `schemas[${id}]`));
  }
  const registry = opts.registryUrl?.replace(/\/+$/, "");
  const doFetch = opts.fetch ?? globalThis.fetch;

  let reader: Promise<Type> | undefined;
  const readerType = () => (reader ??= loadAvsc().then((avsc) => compile(avsc, readerSchema!, "schema")));
  const byId = new Map<number, Promise<Decoder>>();

  async function decoderFor(id: number): Promise<Decoder> {
    const avsc = await loadAvsc();
    let schema = given.get(id);
    if (schema === undefined) {
      if (!registry) throw new Error(`unknown schema id ${id}: add it to avroFormat({ schemas }) or set registryUrl`);
      schema = await fetchSchema(id);
    }
    const type = compile(avsc, schema, `schema id ${id}`);
    if (readerSchema === undefined) return { type };
    const r = await readerType();
    try {
      return { type, reader: r, resolver: r.createResolver(type) };
    } catch (e) {
      throw new Error(`writer schema id ${id} cannot be read as the reader schema: ${(e as Error).message}`);
    }
  }

  async function fetchSchema(id: number): Promise<Schema> {
    const url = `${registry}/schemas/ids/${id}`;
    let res: Response;
    try {
      res = await doFetch(url, { headers: { accept: "application/vnd.schemaregistry.v1+json, application/json", ...opts.registryHeaders } });
    } catch (e) {
      throw registryDown(`schema registry ${url} unreachable: ${(e as Error).message}`, e);
    }
    if (res.status === 404) {
      await res.body?.cancel();
      throw new Error(`unknown schema id ${id}: the schema registry answered 404`);
    }
    if (!res.ok) {
      await res.body?.cancel();
      const msg = `schema registry ${url} answered ${res.status}`;
      throw res.status >= 500 || res.status === 429 ? registryDown(msg) : new Error(msg);
    }
    const body = (await res.json()) as { schema?: string; schemaType?: string };
    if (body.schemaType && body.schemaType !== "AVRO") throw new Error(`schema id ${id} is ${body.schemaType}, not AVRO`);
    if (typeof body.schema !== "string") throw new Error(`schema registry ${url} answered without a schema`);
    return JSON.parse(body.schema) as Schema;
  }

  function decoder(id: number): Promise<Decoder> {
    let d = byId.get(id);
    if (!d) {
      d = decoderFor(id);
      byId.set(id, d);
      // A failed lookup is not cached: the id may be registered later, or the registry come back.
      d.catch(() => byId.delete(id));
    }
    return d;
  }

  return {
    name: framed ? "avro-confluent" : "avro",
    async decode(bytes: Uint8Array): Promise<unknown> {
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (!framed) return read(await readerType(), buf, undefined, "");
      if (buf.length === 0) throw new Error("empty message (a tombstone?): expected the Confluent wire format");
      if (buf[0] !== 0) throw new Error(`bad magic byte 0x${buf[0].toString(16).padStart(2, "0")}: the Confluent wire format starts with 0x00`);
      if (buf.length < 5) throw new Error(`truncated Confluent header: ${buf.length} bytes, expected a magic byte and a 4-byte schema id`);
      const id = buf.readUInt32BE(1);
      const d = await decoder(id);
      return d.reader ? read(d.reader, buf.subarray(5), d.resolver, ` (schema id ${id})`) : read(d.type, buf.subarray(5), undefined, ` (schema id ${id})`);
    },
  };
}

/**
 * A registry that is down is not the record's fault: the error is retriable,
 * for a processor that pauses on retriable decode errors instead of
 * dead-lettering the record.
 */
function registryDown(message: string, cause?: unknown): FreshetError {
  return new FreshetError("SOURCE_UNAVAILABLE", message, { plugin: "avro", retriable: true, cause });
}

function compile(avsc: Avsc, schema: Schema, what: string): Type {
  try {
    // Unions of null and one type decode to the bare value, as JSON rows have them.
    return avsc.Type.forSchema(schema, { wrapUnions: "auto" });
  } catch (e) {
    throw new FreshetError("INVALID_CONFIG", `${what} is not a valid Avro schema: ${(e as Error).message}`, { plugin: "avro" });
  }
}

function read(type: Type, buf: Buffer, resolver: Resolver | undefined, where: string): unknown {
  try {
    return type.fromBuffer(buf, resolver);
  } catch (e) {
    const msg = (e as Error).message;
    if (msg === "truncated buffer") throw new Error(`truncated Avro body${where}: ${buf.length} bytes end before the ${type.name ?? type.typeName} does`);
    if (msg === "trailing data") throw new Error(`trailing bytes after the Avro ${type.name ?? type.typeName}${where}: the message does not match the schema`);
    throw new Error(`cannot decode Avro${where}: ${msg}`);
  }
}

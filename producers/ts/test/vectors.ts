/** Loads schemas/vectors/*.json and turns their fields into the SDK's inputs. */
import * as fs from "node:fs";
import * as path from "node:path";

export const VECTORS_DIR = process.env.NODEMETER_VECTORS_DIR
  ?? path.resolve(__dirname, "..", "..", "..", "..", "schemas", "vectors");

/** JSON.parse, with integers past 2^53 - 1 kept exact (as decimal strings, then BigInt). */
export function load(name: string): any {
  const text = fs.readFileSync(path.join(VECTORS_DIR, name), "utf8");
  const safe = text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, (all, pre: string, digits: string) =>
    BigInt(digits) > BigInt(Number.MAX_SAFE_INTEGER) || BigInt(digits) < -BigInt(Number.MAX_SAFE_INTEGER)
      ? `${pre}{"$bigint": "${digits}"}` : all);
  return JSON.parse(safe);
}

function camel(s: string): string {
  return s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

function value(v: any): any {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    if ("$bigint" in v) return BigInt(v.$bigint);
    if ("$repeat" in v) return (v.$repeat as string).repeat(v.$times as number);
    if ("$type" in v) return v.$value; // string, float, bool, naive_datetime: as given
    if ("iso" in v && "micros" in v) return v.iso;
  }
  return v;
}

/** A meter quantity: past 2^53 - 1 the files write integers as decimal strings. */
function integer(v: any): any {
  return typeof v === "string" && /^-?\d+$/.test(v) ? BigInt(v) : value(v);
}

/** Vector fields (snake_case, wire names) -> the SDK's record (camelCase). */
export function toRecord(fields: Record<string, any>): any {
  const out: Record<string, any> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k === "meters") {
      const m: Record<string, any> = {};
      for (const [mk, mv] of Object.entries(v as Record<string, any>)) {
        m[camel(mk)] = mk === "custom" ? (mv as any[]).map(([n, q]) => [value(n), integer(q)]) : integer(mv);
      }
      out.meters = m;
    } else if (k === "attributes") {
      out.attributes = (v as any[]).map(([a, b]) => [value(a), value(b)]);
    } else {
      out[camel(k)] = value(v);
    }
  }
  return out;
}

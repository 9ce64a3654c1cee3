/** One sample of a scraped exposition. */
export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** A parsed exposition: samples in order, and each family's TYPE and HELP. */
export interface PromExposition {
  readonly samples: readonly PromSample[];
  readonly types: ReadonlyMap<string, string>;
  readonly help: ReadonlyMap<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

/**
 * A small, strict parser of the Prometheus text format, for tests: it throws on any line
 * it does not understand, so a malformed exposition fails the test that scrapes it.
 */
export function parsePrometheus(text: string): PromExposition {
  const samples: PromSample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      (meta[1] === "HELP" ? help : types).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    samples.push({ name: m[1]!, labels: parseLabels(m[3] ?? ""), value: parseValue(m[4]!) });
  }
  return { samples, types, help };
}

/** The value of the one sample with this name whose labels include `labels`; undefined when none. */
export function sampleValue(e: PromExposition, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const hits = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${hits.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return hits[0]?.value;
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const m = LABEL.exec(text);
    if (!m) throw new Error(`bad label set: {${text}}`);
    out[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
  }
  return out;
}

function parseValue(v: string): number {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  const n = Number(v);
  if (v !== "NaN" && Number.isNaN(n)) throw new Error(`bad sample value: ${v}`);
  return n;
}

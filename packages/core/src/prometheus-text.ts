/**
 * Writes the Prometheus text exposition format (version 0.0.4): per metric family one
 * HELP and one TYPE line, then its samples. Label values and HELP text are escaped as
 * the format requires, so an id or a procedure name can never break a line.
 */
export class PrometheusText {
  private readonly lines: string[] = [];

  /** The content type scrapers expect for this format. */
  static readonly CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

  /** Starts a metric family. */
  family(name: string, type: "counter" | "gauge" | "histogram", help: string): this {
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${name} ${type}`);
    return this;
  }

  /** Adds one sample of the current family (or of its _bucket/_sum/_count series). */
  sample(name: string, labels: Readonly<Record<string, string>>, value: number | bigint): this {
    const keys = Object.keys(labels);
    const set = keys.length === 0 ? "" : `{${keys.map((k) => `${k}="${escapeLabelValue(labels[k]!)}"`).join(",")}}`;
    this.lines.push(`${name}${set} ${formatValue(value)}`);
    return this;
  }

  /** The whole exposition, newline-terminated. */
  toString(): string {
    return this.lines.length === 0 ? "" : `${this.lines.join("\n")}\n`;
  }
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(v: number | bigint): string {
  if (typeof v === "bigint") return v.toString();
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

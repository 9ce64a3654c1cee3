/** A small line chart in plain SVG: the last samples of one series, scaled to its maximum. */
export function Spark({ label, values, unit, max }: { label: string; values: readonly number[]; unit: string; max?: number }) {
  const w = 240, h = 60;
  const top = Math.max(max ?? 0, ...values, 1e-9);
  const pts = values.map((v, i) => `${values.length < 2 ? 0 : (i / (values.length - 1)) * w},${h - (v / top) * (h - 4) - 2}`).join(" ");
  const last = values.at(-1);
  return (
    <figure className="chart">
      <figcaption>
        {label}: <strong>{last === undefined ? "—" : `${last.toFixed(1)} ${unit}`}</strong>
      </figcaption>
      <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={`${label} over the last ${values.length} samples`}>
        <rect x="0" y="0" width={w} height={h} className="chart-bg" />
        {values.length > 0 && <polyline points={pts} fill="none" className="chart-line" />}
      </svg>
    </figure>
  );
}

import { useState, type FormEvent, type ReactNode } from "react";
import { errorText, fieldViolations } from "./client.js";

/** One input of a form and the request field it fills (the server's violations name these). */
export interface FormField {
  readonly name: string;
  readonly label: string;
  /** The request field's path as the server's violations name it (snake_case: `spec.size_gib`). */
  readonly field: string;
  /** Other request fields this input also fills (a port range's max), their violations shown here too. */
  readonly more?: readonly string[];
  /** Where the value goes in the request's JSON (`spec.sizeGib`; `spec.nodeIds[]`: a list of it); an empty value sets nothing. */
  readonly json?: string;
  readonly type?: "text" | "number" | "url" | "select" | "checkbox";
  /** For a select: its choices (the first is the default). */
  readonly options?: readonly { readonly value: string; readonly label: string }[];
  readonly initial?: string;
}

/** The name and description inputs most create forms have. */
export const NAME: FormField = { name: "name", label: "Name", field: "name", json: "name" };
export const DESCRIPTION: FormField = { name: "description", label: "Description", field: "description", json: "description" };

/** The submitted form's values by input name. */
export interface FormValues {
  text(name: string): string;
  num(name: string): number;
  on(name: string): boolean;
  /** The request as JSON, from the fields that name their `json` path. */
  request(): Record<string, unknown>;
}

/**
 * A form whose validation is the server's: on submit it calls `onSubmit`; each field
 * violation (google.rpc.BadRequest) of the failed call is shown next to its input
 * (`aria-invalid`, `aria-describedby`), the others and any other error in an alert above.
 * `violationPrefix` is dropped from the violations' paths (ImportImage names `create.name`).
 * On success the form is reset and `onSubmit`'s text is announced.
 */
export function ViolationForm({ id, title, fields, submitLabel, onSubmit, violationPrefix = "", children }: { id: string; title: string; fields: readonly FormField[]; submitLabel: string; onSubmit: (v: FormValues) => Promise<string | void>; violationPrefix?: string; children?: ReactNode }) {
  const [violations, setViolations] = useState<Map<string, string>>(new Map());
  const [error, setError] = useState<string>();
  const [done, setDone] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const text = (k: string) => String(f.get(k) ?? "").trim();
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      const on = (k: string) => f.get(k) === "on";
      const request = () => {
        const req: Record<string, unknown> = {};
        for (const x of fields) {
          if (!x.json) continue;
          const v = x.type === "checkbox" ? on(x.name) || undefined : text(x.name);
          setPath(req, x.json.replace(/\[\]$/, ""), x.json.endsWith("[]") && v ? [v] : v);
        }
        return req;
      };
      const ok = await onSubmit({ text, num: (k) => Number(text(k) || 0), on, request });
      setViolations(new Map());
      form.reset();
      if (ok) setDone(ok);
    } catch (err) {
      const v = new Map([...fieldViolations(err)].map(([k, d]) => [k.startsWith(violationPrefix) ? k.slice(violationPrefix.length) : k, d]));
      setViolations(v);
      const known = new Set<string>(fields.flatMap((x) => [x.field, ...(x.more ?? [])]));
      const rest = [...v].filter(([k]) => !known.has(k));
      setError(v.size === 0 ? errorText(err) : rest.length ? rest.map(([k, d]) => `${k}: ${d}`).join("; ") : "Please correct the fields marked below.");
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card form" aria-label={title} onSubmit={(e) => void submit(e)} noValidate aria-describedby={error ? `${id}-error` : undefined}>
      {error && <p id={`${id}-error`} role="alert" className="error">{error}</p>}
      {fields.map((x) => {
        const v = [x.field, ...(x.more ?? [])].map((k) => violations.get(k)).filter(Boolean).join("; ") || undefined;
        const common = { id: `${id}-${x.name}`, name: x.name, "aria-invalid": v ? true : undefined, "aria-describedby": v ? `${id}-e-${x.name}` : undefined } as const;
        if (x.type === "checkbox") {
          return (
            <div className="field" key={x.name}>
              <label className="check"><input type="checkbox" {...common} defaultChecked={x.initial === "on"} /> {x.label}</label>
              {v && <span id={`${id}-e-${x.name}`} className="error" data-field={x.field}>{v}</span>}
            </div>
          );
        }
        return (
          <div className="field" key={x.name}>
            <label htmlFor={common.id}>{x.label}</label>
            {x.type === "select" ? (
              <select {...common} defaultValue={x.initial}>
                {x.options?.map((o) => <option key={o.value} value={o.value}>{o.label}</option>)}
              </select>
            ) : (
              <input {...common} type={x.type ?? "text"} defaultValue={x.initial} />
            )}
            {v && <span id={`${id}-e-${x.name}`} className="error" data-field={x.field}>{v}</span>}
          </div>
        );
      })}
      {children}
      <button type="submit" disabled={busy}>{submitLabel}</button>
      {done && <p role="status" className="ok">{done}</p>}
    </form>
  );
}

/** Sets `path` (dotted, JSON names) in `obj` unless `value` is empty. */
export function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  if (value === "" || value === undefined) return;
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
  o[keys.at(-1)!] = value;
}

/** An enum's values as select options: `NETWORK_TYPE_VXLAN` shown as `vxlan`, the unspecified one left out unless named. */
export function enumOptions(values: Record<string, string | number>, prefix: string, unspecified?: string): { value: string; label: string }[] {
  const names = Object.keys(values).filter((k) => Number.isNaN(Number(k)) && values[k] !== 0);
  return [...(unspecified ? [{ value: "", label: unspecified }] : []), ...names.map((n) => ({ value: `${prefix}${n}`, label: n.toLowerCase().replace(/_/g, "-") }))];
}

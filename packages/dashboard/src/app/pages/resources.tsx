import { useState, type ReactNode } from "react";
import { useQuery } from "@connectrpc/connect-query";
import { toJson, type DescMessage, type DescMethodUnary, type JsonObject, type Message } from "@bufbuild/protobuf";
import { errorText } from "../client.js";

type Outcome = { ok: boolean; text: string } | undefined;
/** Runs a row's action and shows its outcome above the list. */
export type Act = (label: string, f: () => Promise<unknown>) => void;
/** A Watch* stream's items (useWatch), for a list that stays current. */
export type LiveItems = { items: ReadonlyMap<string, Message>; state: string; error: string | undefined };

/** The first repeated message field of a List* response: the listed objects. */
function listField(method: DescMethodUnary) {
  const f = method.output.fields.find((x) => x.fieldKind === "list" && x.listKind === "message");
  return f && f.fieldKind === "list" && f.listKind === "message" ? f : undefined;
}

/** The objects a List* call returns (one page of 200), shared with ResourceList through TanStack Query's cache. */
export function useList<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O>, enabled = true): { items: Message[]; data: unknown; error: unknown; refetch: () => unknown } {
  const q = useQuery(method, { pageSize: 200 } as never, { enabled });
  const field = listField(method as DescMethodUnary);
  const items = q.data && field ? ((q.data as unknown as Record<string, Message[]>)[field.localName] ?? []) : [];
  return { items, data: q.data, error: q.error, refetch: () => q.refetch() };
}

/** Objects as JSON (the API's JSON names; enums by name), for pickers and rows. */
export function asJson(schema: DescMessage, items: Iterable<Message>): JsonObject[] {
  return [...items].map((it) => toJson(schema, it, { alwaysEmitImplicit: false }) as JsonObject);
}

/** Objects as a select's choices (value: the id), after one meaning none. */
export const choices = (items: JsonObject[], none: string): { value: string; label: string }[] => [{ value: "", label: none }, ...items.map((j) => ({ value: String(j["id"]), label: nameOf(j) }))];

/** An object's name for people: its name, else its address (floating IPs), else its id. */
export const nameOf = (j: JsonObject) => String(j["name"] || j["address"] || j["id"]);



/**
 * One kind's list (the List* RPC's first repeated field), each row with its state and, on
 * demand, the whole object as JSON (enum names, as the API's JSON shows them).
 */
export function ResourceList<I extends DescMessage, O extends DescMessage>({ title, noun = title.toLowerCase().replace(/s$/, ""), method, remove, extra, live, create }: { title: string; noun?: string; method: DescMethodUnary<I, O>; remove?: (id: string) => Promise<unknown>; extra?: (j: JsonObject, act: Act) => ReactNode; live?: LiveItems; create?: ReactNode }) {
  // With `live` (a Watch* stream) the rows come from it and stay current; else one List* call.
  const q = useList(method, !live);
  const [outcome, setOutcome] = useState<Outcome>();
  const act: Act = (label, f) => {
    setOutcome({ ok: true, text: `${label}…` });
    f().then(
      () => setOutcome({ ok: true, text: `${label}: accepted` }),
      (err: unknown) => setOutcome({ ok: false, text: `${label} failed: ${errorText(err)}` }),
    ).finally(() => void (live ? undefined : q.refetch()));
  };
  const schema = listField(method as DescMethodUnary)?.message;
  const items: Message[] = live ? [...live.items.values()] : q.items;
  const loaded = live ? live.state === "live" || live.items.size > 0 : q.data !== undefined;
  return (
    <section aria-labelledby={`h-${title}`}>
      <h2 id={`h-${title}`}>
        {title} {loaded && <span className="muted">({items.length})</span>}
      </h2>
      {create && (
        <details className="create">
          <summary>New {noun}</summary>
          {create}
        </details>
      )}
      {q.error !== null && q.error !== undefined && <p className="error">{errorText(q.error)}</p>}
      {live?.error && <p className="muted">{live.state === "live" ? "" : "reconnecting: "}{live.error}</p>}
      {outcome && <p role="status" className={outcome.ok ? "ok" : "error"}>{outcome.text}</p>}
      {!loaded && <p className="muted">Loading…</p>}
      {loaded && items.length === 0 && <p className="muted">None.</p>}
      {items.length > 0 && schema && (
        <div className="scroll">
          <table>
            <thead>
              <tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Details</th>{(remove || extra) && <th scope="col">Actions</th>}</tr>
            </thead>
            <tbody>
              {items.map((it) => {
                const j = toJson(schema, it, { alwaysEmitImplicit: false }) as JsonObject;
                const status = (j["status"] ?? {}) as JsonObject;
                return (
                  <tr key={String(j["id"])} data-row={nameOf(j)}>
                    <td>{nameOf(j)}</td>
                    <td data-testid="row-state">{String(status["state"] ?? status["phase"] ?? j["state"] ?? "")}{status["importProgressPercent"] !== undefined ? ` (import ${String(status["importProgressPercent"])}%)` : ""}
                      {(status["errorMessage"] ?? j["errorMessage"]) !== undefined && <p className="muted message">{String(status["errorMessage"] ?? j["errorMessage"])}</p>}</td>
                    <td>
                      <details>
                        <summary>{String(j["id"])}</summary>
                        <pre>{JSON.stringify(j, null, 2)}</pre>
                      </details>
                    </td>
                    {(remove || extra) && (
                      <td className="actions">
                        {extra?.(j, act)}
                        {remove && <button className="danger" onClick={() => { if (confirm(`Delete ${title.toLowerCase()} ${nameOf(j)}?`)) act(`Delete ${nameOf(j)}`, () => remove(String(j["id"]))); }}>Delete</button>}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}


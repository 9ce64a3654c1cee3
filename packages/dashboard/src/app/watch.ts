import { useEffect, useRef, useState } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { session } from "./client.js";

/** One message of a Watch* stream. */
export interface WatchMessage<T> {
  type: EventType;
  item: T | undefined;
  resourceVersion: bigint;
}

export type WatchState = "connecting" | "live" | "reconnecting";

/**
 * Keeps a live map of a Watch* stream's objects: the snapshot (ADDED… then SYNCED), then every
 * change. After an error (a server restart) it reconnects by itself with backoff and resumes
 * from the last resource version; OUT_OF_RANGE (history gone) starts over from a fresh
 * snapshot, which replaces the map once it is complete. The messages of one network read
 * are applied together and rendered once (a zero-delay timer after them).
 */
export function useWatch<T>(open: (resourceVersion: bigint, signal: AbortSignal) => AsyncIterable<WatchMessage<T>>, key: (t: T) => string, deps: readonly unknown[] = []) {
  const [items, setItems] = useState<ReadonlyMap<string, T>>(new Map());
  const [state, setState] = useState<WatchState>("connecting");
  const [error, setError] = useState<string | undefined>();
  const openRef = useRef(open);
  openRef.current = open;
  useEffect(() => {
    const ctl = new AbortController();
    let map = new Map<string, T>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      timer = undefined;
      setItems(new Map(map));
    };
    const schedule = () => {
      timer ??= setTimeout(flush, 0);
    };
    void (async () => {
      let rv = 0n;
      let delay = 250;
      while (!ctl.signal.aborted) {
        // A fresh snapshot is gathered apart and swapped in at SYNCED (no flash of an empty list).
        let building: Map<string, T> | undefined = rv === 0n ? new Map() : undefined;
        try {
          for await (const m of openRef.current(rv, ctl.signal)) {
            if (m.resourceVersion > rv) rv = m.resourceVersion;
            const target = building ?? map;
            if (m.type === EventType.SYNCED) {
              if (building) {
                map = building;
                building = undefined;
              }
              setState("live");
              setError(undefined);
              delay = 250;
              schedule();
              continue;
            }
            if (!m.item) continue;
            if (m.type === EventType.DELETED) target.delete(key(m.item));
            else target.set(key(m.item), m.item);
            if (!building) schedule();
          }
          if (ctl.signal.aborted) return;
        } catch (err) {
          if (ctl.signal.aborted) return;
          const e = ConnectError.from(err);
          if (e.code === Code.Unauthenticated && session.token()) {
            // The session's token expired or was revoked: back to the login form.
            session.clear();
            location.reload();
            return;
          }
          if (e.code === Code.OutOfRange || e.code === Code.ResourceExhausted) rv = 0n;
          setError(`${Code[e.code]}: ${e.rawMessage}`);
        }
        setState("reconnecting");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5000);
      }
    })();
    return () => {
      ctl.abort();
      if (timer) clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return { items, state, error };
}

/** A Watch* stream's messages as useWatch's changes. */
export async function* mapStream<M, T>(stream: AsyncIterable<M>, f: (m: M) => { type: number; item: T | undefined; resourceVersion: bigint }) {
  for await (const m of stream) yield f(m);
}

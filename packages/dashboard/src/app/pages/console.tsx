import { useEffect, useRef, useState } from "react";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { session } from "../client.js";

/** The VM's serial console: xterm.js over the control plane's console WebSocket, as the writer. */
export function Console({ vmId }: { vmId: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [role, setRole] = useState("connecting…");
  useEffect(() => {
    const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, rows: 24, scrollback: 5000 });
    term.open(host.current!);
    term.focus();
    const q = new URLSearchParams({ write: "1", tail_bytes: "65536" });
    const t = session.token();
    if (t) q.set("access_token", t);
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/vms/${encodeURIComponent(vmId)}/console/ws?${q}`);
    ws.binaryType = "arraybuffer";
    const enc = new TextEncoder();
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        try {
          const f = JSON.parse(m.data) as { type: string; role?: string; message?: string; code?: string };
          if (f.type === "role") setRole(f.role === "writer" ? "attached (writer)" : `${f.role}${f.message ? `: ${f.message}` : ""}`);
          else if (f.type === "error") setRole(`error: ${f.code}: ${f.message}`);
        } catch {
          /* not a control frame */
        }
      } else term.write(new Uint8Array(m.data as ArrayBuffer));
    };
    ws.onclose = (e) => setRole((r) => (r.startsWith("error") || r.startsWith("could not") ? r : e.code === 1000 ? "console ended" : `disconnected (${e.code}${e.reason ? `: ${e.reason}` : ""})`));
    ws.onerror = () => setRole("could not attach (see the VM's state: the console needs a running VM on a node)");
    const input = term.onData((d) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    return () => {
      input.dispose();
      ws.close();
      term.dispose();
    };
  }, [vmId]);
  return (
    <section aria-label="Serial console">
      <p role="status" data-testid="console-role">Console: {role}</p>
      <div ref={host} className="terminal" data-testid="terminal" />
    </section>
  );
}

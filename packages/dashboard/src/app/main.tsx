import { StrictMode, useEffect, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { TransportProvider } from "@connectrpc/connect-query";
import { Code, ConnectError } from "@connectrpc/connect";
import { IdentityService } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { client, errorText, session, transport } from "./client.js";
import { LiveProvider, useLive } from "./live.js";
import { Link, usePath } from "./router.js";
import { Overview } from "./pages/overview.js";
import { VmList } from "./pages/vm-list.js";
import { VmCreate } from "./pages/vm-create.js";
import { VmDetail } from "./pages/vm-detail.js";
import { NodeList, NodeDetail } from "./pages/nodes.js";
import { StoragePage } from "./pages/storage.js";
import { NetworkPage } from "./pages/network.js";
import "./styles.css";

const identity = client(IdentityService);
const queryClient = new QueryClient({ defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: false } } });

type Who = { name: string; trusted: boolean };

/** Lets in a session with a valid token, or anyone in local trust mode (WhoAmI answers without a token); else the login form. */
function Gate() {
  const [who, setWho] = useState<Who | null | undefined>(undefined);
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    identity.whoAmI({}).then(
      (w) => setWho({ name: w.name || w.id, trusted: !session.token() }),
      (err: unknown) => {
        if (ConnectError.from(err).code === Code.Unauthenticated) {
          session.clear();
          setWho(null);
        } else setProblem(errorText(err));
      },
    );
  }, []);
  if (problem) return <main className="center"><p role="alert">The control plane did not answer: {problem}</p></main>;
  if (who === undefined) return <main className="center"><p>Connecting…</p></main>;
  if (who === null) return <Login onIn={setWho} />;
  return (
    <LiveProvider>
      <Shell who={who} />
    </LiveProvider>
  );
}

function Login({ onIn }: { onIn: (w: Who) => void }) {
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    setBusy(true);
    setError(undefined);
    try {
      const r = await identity.login({ username: String(form.get("username")), password: String(form.get("password")) });
      session.set(r.accessToken);
      onIn({ name: r.user?.username ?? String(form.get("username")), trusted: false });
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="center">
      <form className="card login" onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">Quantix</h1>
        <label>
          User name
          <input name="username" autoComplete="username" required autoFocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required />
        </label>
        {error && <p role="alert" className="error">{error}</p>}
        <button type="submit" disabled={busy}>Log in</button>
      </form>
    </main>
  );
}

function Shell({ who }: { who: Who }) {
  const path = usePath();
  const live = useLive();
  const parts = path.split("/").filter(Boolean);
  let page;
  if (parts.length === 0) page = <Overview />;
  else if (parts[0] === "vms" && parts.length === 1) page = <VmList />;
  else if (parts[0] === "vms" && parts[1] === "new") page = <VmCreate />;
  else if (parts[0] === "vms" && parts[1]) page = <VmDetail id={decodeURIComponent(parts[1])} tab={parts[2]} />;
  else if (parts[0] === "nodes" && parts.length === 1) page = <NodeList />;
  else if (parts[0] === "nodes" && parts[1]) page = <NodeDetail id={decodeURIComponent(parts[1])} />;
  else if (parts[0] === "storage") page = <StoragePage />;
  else if (parts[0] === "network") page = <NetworkPage />;
  else page = <p>No page at {path}. <Link to="/">Overview</Link></p>;
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <strong className="brand">Quantix</strong>
        <nav aria-label="Main">
          <Link to="/">Overview</Link>
          <Link to="/vms">VMs</Link>
          <Link to="/nodes">Nodes</Link>
          <Link to="/storage">Storage</Link>
          <Link to="/network">Network</Link>
        </nav>
        <span className={`live live-${live.state}`} role="status" data-testid="live-state" title={live.error}>
          {live.state === "live" ? "● live" : live.state === "connecting" ? "connecting…" : "reconnecting…"}
        </span>
        <span className="who">
          {who.trusted ? "local trust" : who.name}
          {!who.trusted && (
            <button
              className="link"
              onClick={() => {
                session.clear();
                location.assign("/");
              }}
            >
              Log out
            </button>
          )}
        </span>
      </header>
      <main id="main" tabIndex={-1}>{page}</main>
    </>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <TransportProvider transport={transport}>
      <QueryClientProvider client={queryClient}>
        <Gate />
      </QueryClientProvider>
    </TransportProvider>
  </StrictMode>,
);

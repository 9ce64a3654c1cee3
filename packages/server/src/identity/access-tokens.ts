import { createPublicKey } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CredentialSchema, type Credential } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { SigningKeySchema, type SigningKey, type User } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { CREDENTIAL_KIND, QuantixError, timeValue, type Clock, type IdGenerator, type Store } from "@quantix/core";
import { decodeProtectedHeader, errors, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK } from "jose";
import type { IdentityIndex } from "./identity-index.js";

/** The audience of every access token this cluster signs. */
export const AUDIENCE = "quantix";
/** The one signature algorithm: ECDSA P-256 (anything else, `none` first, is refused). */
export const ALGORITHM = "ES256";
/** Seconds of clock difference between replicas tolerated for exp and nbf. */
const LEEWAY_SEC = 5;

type Key = Awaited<ReturnType<typeof importJWK>>;

/** A new signing key: its public half (the kind) and private half (a credential). */
export async function newSigningKey(ids: IdGenerator, clock: Clock): Promise<{ key: SigningKey; credential: Credential }> {
  const { publicKey, privateKey } = await generateKeyPair(ALGORITHM, { extractable: true });
  const id = ids.newId();
  const now = timestampFromMs(clock.now());
  return {
    key: create(SigningKeySchema, { id, algorithm: ALGORITHM, publicJwk: JSON.stringify(await exportJWK(publicKey)), createdAt: now }),
    credential: create(CredentialSchema, { id, ownerType: "signing-key", privateJwk: JSON.stringify(await exportJWK(privateKey)), updatedAt: now }),
  };
}

/** The claims of a verified access token this control plane needs. */
export interface AccessClaims {
  readonly userId: string;
  readonly expiresAtMs: number;
  readonly issuedAtSec: number;
}

/**
 * Access tokens: short-lived JWTs (ES256) a login returns, issued by this cluster (iss:
 * its cluster id, aud: "quantix"), signed by the newest signing key; retired keys verify
 * until the longest token they can have signed has expired (`ttlSec` after retirement).
 */
export class AccessTokens {
  private readonly publicKeys = new Map<string, Key>();
  private readonly privateKeys = new Map<string, Key>();

  constructor(
    private readonly deps: { store: Store; index: IdentityIndex; clock: Clock; issuer: string; ttlSec: number },
  ) {}

  /** A token for `user`, from now for ttlSec. */
  async issue(user: User): Promise<{ token: string; expiresAtMs: number }> {
    const key = this.current();
    if (!key) throw new QuantixError("unavailable", "no signing key exists yet; the control plane is starting");
    const nowSec = Math.floor(this.deps.clock.now() / 1000);
    const exp = nowSec + this.deps.ttlSec;
    const token = await new SignJWT({})
      // No typ, jti or nbf (nbf would equal iat): every call carries the token, so it is kept short.
      .setProtectedHeader({ alg: ALGORITHM, kid: key.id })
      .setIssuer(this.deps.issuer)
      .setAudience(AUDIENCE)
      .setSubject(user.id)
      .setIssuedAt(nowSec)
      .setExpirationTime(exp)
      .sign(await this.privateKey(key.id));
    return { token, expiresAtMs: exp * 1000 };
  }

  /** The claims of a valid token; UNAUTHENTICATED, saying why, for any other. */
  async verify(token: string): Promise<AccessClaims> {
    let kid: string | undefined;
    let alg: string | undefined;
    try {
      ({ kid, alg } = decodeProtectedHeader(token));
    } catch {
      throw unauthenticated("the bearer token is neither an access token nor an API token");
    }
    if (alg !== ALGORITHM) throw unauthenticated(`the access token's algorithm is not accepted (only ${ALGORITHM})`);
    const meta = kid === undefined ? undefined : this.deps.index.signingKeys.get(kid);
    if (!meta) throw unauthenticated("the access token was signed by a key this cluster does not know");
    const now = this.deps.clock.now();
    if (meta.retiredAt && timeValue(meta.retiredAt) + this.deps.ttlSec * 1000 < now) throw unauthenticated("the access token was signed by a retired key");
    try {
      const { payload } = await jwtVerify(token, this.publicKey(meta), {
        algorithms: [ALGORITHM],
        issuer: this.deps.issuer,
        audience: AUDIENCE,
        currentDate: new Date(now),
        clockTolerance: LEEWAY_SEC,
        requiredClaims: ["sub", "exp", "iat"],
      });
      return { userId: payload.sub!, expiresAtMs: payload.exp! * 1000, issuedAtSec: payload.iat! };
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw unauthenticated("the access token has expired; log in again");
      if (err instanceof errors.JWTClaimValidationFailed) throw unauthenticated(`the access token is not valid here (claim ${err.claim}: ${err.reason})`);
      throw unauthenticated("the access token's signature does not verify");
    }
  }

  /** The signing key: the newest one not retired. */
  private current(): SigningKey | undefined {
    let best: SigningKey | undefined;
    for (const k of this.deps.index.signingKeys.values()) {
      if (k.retiredAt) continue;
      if (!best || timeValue(k.createdAt) > timeValue(best.createdAt)) best = k;
    }
    return best;
  }

  private publicKey(meta: SigningKey): Key {
    let k = this.publicKeys.get(meta.id);
    if (!k) {
      k = importJwkSync(JSON.parse(meta.publicJwk) as JWK);
      this.publicKeys.set(meta.id, k);
    }
    return k;
  }

  private async privateKey(id: string): Promise<Key> {
    let k = this.privateKeys.get(id);
    if (!k) {
      const cred = await this.deps.store.of(CREDENTIAL_KIND).get(id);
      if (!cred?.privateJwk) throw new QuantixError("internal", `the private half of signing key '${id}' is missing`);
      k = await importJWK(JSON.parse(cred.privateJwk) as JWK, ALGORITHM);
      this.privateKeys.set(id, k);
    }
    return k;
  }
}

/** A public JWK as a Node KeyObject (which jose verifies with), without importJWK's promise. */
function importJwkSync(jwk: JWK): Key {
  return createPublicKey({ key: jwk as never, format: "jwk" }) as unknown as Key;
}

/** UNAUTHENTICATED with a reason that never echoes the token. */
export function unauthenticated(why: string): QuantixError {
  return new QuantixError("unauthenticated", why);
}

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

// An API token string is `qtx_<token id>_<secret>`: the id finds the token (one lookup),
// the secret (256 random bits, base64url) is checked against its SHA-256 digest. A slow
// hash buys nothing for a secret of that entropy, and the check is on the hot path.
const FORMAT = /^qtx_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

/** A new token string for token `id`, and the digest to keep. */
export function newTokenSecret(id: string): { token: string; digest: string } {
  const secret = randomBytes(32).toString("base64url");
  return { token: `qtx_${id}_${secret}`, digest: digestOf(secret) };
}

/** The token id and secret of an API token string, or undefined when it is not one. */
export function parseTokenString(token: string): { id: string; secret: string } | undefined {
  const m = FORMAT.exec(token);
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}

/** Whether `secret` has the kept digest (compared in constant time). */
export function secretMatches(secret: string, digest: string): boolean {
  const a = Buffer.from(digestOf(secret), "hex");
  const b = Buffer.from(digest, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

function digestOf(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

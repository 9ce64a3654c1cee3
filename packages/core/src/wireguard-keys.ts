import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";

/**
 * WireGuard keys (X25519), as `wg genkey` and `wg pubkey` make them: the control plane
 * generates a VPN service's key and shows its public half; the agent checks a tunnel's.
 */

/** A WireGuard key: base64 of 32 bytes (44 characters, one '=' of padding). */
export const WIREGUARD_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** The PKCS#8 DER prefix of a raw 32-byte X25519 private key. */
const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");

/** A new WireGuard private key (base64 of 32 bytes, as `wg genkey`). */
export function newWireguardKey(): string {
  const { privateKey } = generateKeyPairSync("x25519");
  return Buffer.from(privateKey.export({ format: "jwk" }).d!, "base64url").toString("base64");
}

/** The public key of a (well-formed) WireGuard private key, as `wg pubkey`. */
export function wireguardPublicKey(privateKey: string): string {
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8, Buffer.from(privateKey, "base64")]), format: "der", type: "pkcs8" });
  return Buffer.from(createPublicKey(key).export({ format: "jwk" }).x!, "base64url").toString("base64");
}

import { hash, verify } from "@node-rs/argon2";
import { QuantixError, type FieldViolation } from "@quantix/core";

/** The shortest and longest passwords accepted (NIST 800-63B: long passphrases welcome). */
export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 1024;

/** Hashes a password with argon2id (the library's defaults: 19 MiB, 2 passes, OWASP's minimum). */
export function hashPassword(password: string): Promise<string> {
  return hash(password);
}

// A hash of nothing anyone knows, verified against when the user does not exist, so that a
// wrong username costs the same time as a wrong password (no user enumeration by timing).
let decoy: Promise<string> | undefined;

/** Whether `password` matches `phc` (an argon2 PHC string); with `phc` undefined, spends the same time and says no. */
export async function verifyPassword(phc: string | undefined, password: string): Promise<boolean> {
  if (phc === undefined) {
    decoy ??= hash(`decoy-${Math.random()}`);
    await verify(await decoy, password).catch(() => false);
    return false;
  }
  try {
    return await verify(phc, password);
  } catch {
    return false;
  }
}

/** The rules of a new password, as violations of `field` (never echoing the password). */
export function passwordViolations(field: string, password: string): FieldViolation[] {
  if (password.length === 0) return [{ field, reason: "REQUIRED", description: "is required" }];
  if (password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) return [{ field, reason: "INVALID_LENGTH", description: `must be ${PASSWORD_MIN}-${PASSWORD_MAX} characters long` }];
  return [];
}

/** INVALID_ARGUMENT unless the password follows the rules. */
export function requireGoodPassword(field: string, password: string): void {
  const v = passwordViolations(field, password);
  if (v.length > 0) throw new QuantixError("invalid_argument", `invalid request: ${field}: ${v[0]!.description}`, v);
}

type Method = (this: Headers, ...args: unknown[]) => unknown;

/**
 * Response headers or trailers that know whether anything set them, so a call that sets
 * none sends constant ones (building a header object per call costs more than a unary read).
 */
export class OutgoingHeaders extends Headers {
  /** Whether set, append or delete was called. */
  changed = false;
}

// Declared methods of Headers cannot be overridden in a TypeScript class body, so the
// writers are wrapped here.
for (const name of ["append", "delete", "set"] as const) {
  const base = Headers.prototype[name] as Method;
  Object.defineProperty(OutgoingHeaders.prototype, name, {
    value: function (this: OutgoingHeaders, ...args: unknown[]) {
      this.changed = true;
      return base.apply(this, args);
    },
    writable: true,
    configurable: true,
  });
}

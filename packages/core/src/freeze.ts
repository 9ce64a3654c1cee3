/** Freezes an object graph (typed arrays cannot be frozen and are left as they are). */
export function deepFreeze<T>(o: T): T {
  if (o === null || typeof o !== "object" || Object.isFrozen(o) || ArrayBuffer.isView(o)) return o;
  for (const v of Object.values(o)) deepFreeze(v);
  return Object.freeze(o);
}

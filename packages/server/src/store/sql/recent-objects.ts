import type { ChangeType, Resource } from "@quantix/core";

/** Objects a collection keeps at most (the most recently changed). */
const MAX_OBJECTS = 1024;

/**
 * The objects of one kind that its latest changes published (the frozen objects the watch
 * hub hands out; a deleted one is dropped), most recently changed last, at most
 * MAX_OBJECTS. A get of a VM that was just created or changed (every controller reconciling
 * it reads it) is then served from memory. It is only right when every change reaches it
 * before its writer is answered, in order: the embedded store, whose database no other
 * process writes (SqlCollectionContext.recentGets). Told `undefined` (the change tailer
 * lost the order), it forgets everything. A get it cannot serve reads the database, and
 * what was read is not kept (a change published meanwhile could be newer).
 */
export class RecentObjects<T extends Resource> {
  private readonly objects = new Map<string, T>();

  get(id: string): T | undefined {
    return this.objects.get(id);
  }

  seen(type: ChangeType, object: T | undefined): void {
    if (object === undefined) {
      this.objects.clear();
      return;
    }
    this.objects.delete(object.id);
    if (type === "DELETED") return;
    this.objects.set(object.id, object);
    if (this.objects.size > MAX_OBJECTS) this.objects.delete(this.objects.keys().next().value!);
  }
}

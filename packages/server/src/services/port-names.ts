import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NetworkAllocationSchema, type NetworkAllocation } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import type { Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { NETWORK_ALLOCATION_KIND, PORT_KIND, portNameAllocationId, QuantixError, type Resource, type Store, type TxOp } from "@quantix/core";

type P = Port & Resource;
type A = NetworkAllocation & Resource;

/**
 * A port's name is unique on its network. The uniqueness is a claim, a NetworkAllocation
 * whose id derives from (network, name), created in the commit that gives a port its
 * name (CreatePort, a rename by UpdatePort) and deleted in the one that takes it away (a
 * rename, DeletePort and every delete of ports through portDeleteOps, a network's delete):
 * of two commits claiming one name, on any replica, the second fails as a whole. An empty
 * name claims nothing (the ports CreateVM and the network controller make are unnamed).
 * Ports stored before names were claimed hold no claim; `refuseTakenName`, a read before
 * the write, still finds them.
 */

/** The create of `port`'s name claim, if it has a name. */
export function nameClaimOps(port: P, nowMs: number): TxOp[] {
  if (port.name === "") return [];
  const networkId = port.spec?.networkId ?? "";
  const claim = create(NetworkAllocationSchema, { id: portNameAllocationId(networkId, port.name), networkId, portId: port.id, projectId: port.projectId, portName: port.name, createdAt: timestampFromMs(nowMs) });
  return [{ op: "create", kind: NETWORK_ALLOCATION_KIND as never, object: claim as A }];
}

/** The claim of `name` on network `networkId`, if any port holds one. */
export async function nameClaimOf(store: Store, networkId: string, name: string): Promise<A | undefined> {
  return name === "" ? undefined : store.of(NETWORK_ALLOCATION_KIND).get(portNameAllocationId(networkId, name));
}

/** ALREADY_EXISTS naming the name, the network and the port holding the name. */
export function takenName(networkId: string, name: string, holder: string): QuantixError {
  return new QuantixError("already_exists", `a port named '${name}' already exists on virtual network '${networkId}' (port '${holder}')`);
}

/** ALREADY_EXISTS when a port other than `self` has `name` on the network (a claim, or a port stored before claims). */
export async function refuseTakenName(store: Store, networkId: string, name: string, self?: string): Promise<void> {
  if (name === "") return;
  const claim = await nameClaimOf(store, networkId, name);
  if (claim && claim.portId !== self) throw takenName(networkId, name, claim.portId);
  const page = await store.of(PORT_KIND).list({ where: { network_id: networkId, name }, order: { field: "created_at", desc: false }, limit: 2 });
  const other = page.items.find((p) => p.id !== self);
  if (other) throw takenName(networkId, name, other.id);
}

/**
 * After a commit that claimed `name` for port `self` failed ALREADY_EXISTS: the error
 * naming the port that holds the name now, or undefined when the failure was not the
 * name's (an address, a MAC).
 */
export async function lostName(store: Store, networkId: string, name: string, self: string): Promise<QuantixError | undefined> {
  const claim = await nameClaimOf(store, networkId, name);
  return claim && claim.portId !== self ? takenName(networkId, name, claim.portId) : undefined;
}

/**
 * The claim changes of a rename from `before` to `after`: the claim of the old name
 * deleted (`held`, read for `before`: a claim the port holds; a port stored before claims
 * has none), the new name claimed. None when the name stays.
 */
export function renameOps(before: P, after: P, held: A | undefined, nowMs: number): TxOp[] {
  if (before.name === after.name) return [];
  const release: TxOp[] = held && held.portId === before.id && held.portName === before.name ? [{ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: held }] : [];
  return [...release, ...nameClaimOps(after, nowMs)];
}

import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VpnServiceSchema } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { applyUpdateMask } from "./update-mask.js";

test("a mask path through a oneof member sets that member (case and value), and a missing one clears the oneof", () => {
  const target = create(VpnServiceSchema, { spec: { protocolConfig: { case: "wireguard", value: { listenPort: 51820, privateKey: "old" } } } }) as unknown as Record<string, unknown>;
  const source = create(VpnServiceSchema, { spec: { protocolConfig: { case: "wireguard", value: { listenPort: 1, privateKey: "new" } } } }) as unknown as Record<string, unknown>;
  assert.deepEqual(applyUpdateMask(VpnServiceSchema, target, source, ["spec.wireguard.private_key"], () => true), []);
  const t = target as unknown as ReturnType<typeof create<typeof VpnServiceSchema>>;
  assert.equal(t.spec!.protocolConfig.case, "wireguard");
  assert.deepEqual(t.spec!.protocolConfig.case === "wireguard" ? [t.spec!.protocolConfig.value.listenPort, t.spec!.protocolConfig.value.privateKey] : [], [51820, "new"], "only the named leaf changed");
  applyUpdateMask(VpnServiceSchema, target, source, ["spec.wireguard"], () => true);
  assert.deepEqual(t.spec!.protocolConfig.case === "wireguard" ? t.spec!.protocolConfig.value.listenPort : 0, 1, "the whole member replaced");
  // An absent member clears the oneof when it is the member set, and leaves another member alone.
  const empty = create(VpnServiceSchema, { spec: {} }) as unknown as Record<string, unknown>;
  applyUpdateMask(VpnServiceSchema, target, empty, ["spec.ipsec"], () => true);
  assert.equal(t.spec!.protocolConfig.case, "wireguard");
  applyUpdateMask(VpnServiceSchema, target, empty, ["spec.wireguard"], () => true);
  assert.equal(t.spec!.protocolConfig.case, undefined);
});

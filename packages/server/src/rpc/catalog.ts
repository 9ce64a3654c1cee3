import type { DescFile, DescService } from "@bufbuild/protobuf";
import { file_Quantixkvm_compute_v1_node_service } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { file_Quantixkvm_compute_v1_vm_service } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { file_Quantixkvm_compute_v1_enrollment_service } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { file_Quantixkvm_compute_v1_migration_service } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_service_pb.js";
import { file_Quantixkvm_event_v1_event_service } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { file_Quantixkvm_identity_v1_identity_service } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import { file_Quantixkvm_identity_v1_project_service } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { file_Quantixkvm_quota_v1_quota_service } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { file_Quantixkvm_audit_v1_audit_service } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_service_pb.js";
import { file_Quantixkvm_network_v1_floating_ip_service } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { file_Quantixkvm_network_v1_load_balancer_service } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { file_Quantixkvm_network_v1_port_service } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { file_Quantixkvm_network_v1_security_group_service } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { file_Quantixkvm_network_v1_virtual_network_service } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { file_Quantixkvm_network_v1_vpn_service_manager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { file_Quantixkvm_storage_v1_image_service } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { file_Quantixkvm_storage_v1_snapshot_service } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { file_Quantixkvm_storage_v1_storage_pool_service } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { file_Quantixkvm_storage_v1_volume_service } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { file_virtualdom_v1_gateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { file_vmm_v1_network, NetworkService } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { file_vmm_v1_storage, StorageService } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { file_vmm_v1_vm, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";

/** Services of the API contract that later issues implement, with what brings each. */
export const PENDING_SERVICES: readonly { service: DescService; arrivesWith: string }[] = [];

/**
 * Services of the contract that another process serves, with where: the control plane
 * answers them UNIMPLEMENTED saying so (and lists them in reflection, for their types).
 */
export const SERVED_ELSEWHERE: readonly { service: DescService; where: string }[] = [
  {
    service: VmService,
    where:
      "each host's agent serves it (`npm run agent`, on port 9090 by default: VMCP_PORT); a registered node's agent address is its spec.agent_endpoint (GetNode)",
  },
  {
    service: StorageService,
    where:
      "each host's agent serves it beside vmm.v1.VmService (the node side of pools, volumes and images); users manage storage through Quantixkvm.storage.v1 (StoragePoolService, VolumeService) here",
  },
  {
    service: NetworkService,
    where:
      "each host's agent started with VMCP_NETWORK=on serves it beside vmm.v1.VmService (the node side of networks, ports and security groups: bridges, VXLAN, TAPs, nftables, dnsmasq)",
  },
];

/** Every file of the contract whose services this server answers, for reflection. */
export const SERVED_FILES: readonly DescFile[] = [
  file_Quantixkvm_compute_v1_vm_service,
  file_Quantixkvm_compute_v1_node_service,
  file_Quantixkvm_compute_v1_migration_service,
  file_Quantixkvm_compute_v1_enrollment_service,
  file_Quantixkvm_event_v1_event_service,
  file_Quantixkvm_identity_v1_identity_service,
  file_Quantixkvm_identity_v1_project_service,
  file_Quantixkvm_quota_v1_quota_service,
  file_Quantixkvm_audit_v1_audit_service,
  file_Quantixkvm_storage_v1_storage_pool_service,
  file_Quantixkvm_storage_v1_volume_service,
  file_Quantixkvm_storage_v1_snapshot_service,
  file_Quantixkvm_storage_v1_image_service,
  file_Quantixkvm_network_v1_virtual_network_service,
  file_Quantixkvm_network_v1_port_service,
  file_Quantixkvm_network_v1_security_group_service,
  file_Quantixkvm_network_v1_floating_ip_service,
  file_Quantixkvm_network_v1_load_balancer_service,
  file_Quantixkvm_network_v1_vpn_service_manager,
  file_vmm_v1_vm,
  file_vmm_v1_storage,
  file_vmm_v1_network,
  file_virtualdom_v1_gateway,
];

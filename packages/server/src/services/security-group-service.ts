import { AsyncLocalStorage } from "node:async_hooks";
import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EtherType, SecurityGroupRuleDirection, SecurityGroupRuleSchema, SecurityGroupSchema, type SecurityGroup, type SecurityGroupRule } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import {
  UpdateSecurityGroupRequestSchema,
  type AddSecurityGroupRulesRequest,
  type CreateSecurityGroupRequest,
  type DeleteSecurityGroupRequest,
  type RemoveSecurityGroupRulesRequest,
  type UpdateSecurityGroupRequest,
} from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import {
  allOf,
  checkGroupName,
  checkRule,
  commonViolations,
  DEFAULT_PROJECT_ID,
  ID_PATTERN,
  DEFAULT_SECURITY_GROUP,
  NETWORK_LIMITS,
  notFound,
  PORT_KIND,
  PROJECT_KIND,
  QuantixError,
  ruleKey,
  SECURITY_GROUP_KIND,
  throwIfViolations,
  Violations,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
} from "@quantix/core";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";

type G = SecurityGroup & Resource;

const ANY_EGRESS = [EtherType.IPV4, EtherType.IPV6].map((ethertype) => ({ direction: SecurityGroupRuleDirection.EGRESS, ethertype }));

/**
 * SecurityGroupService's writes: allow rules checked, completed and given ids; a group
 * without rules gets allow-all egress (IPv4 and IPv6) and no ingress; each project's
 * "default" group (allow all egress, ingress only from its own members, as Neutron's) is
 * made with the project's first network, port or group and cannot be deleted or renamed.
 * A group is deleted only while no port uses it (its port_count, kept by the ports'
 * commits) and no other group's rule names it.
 */
export class SecurityGroupService {
  private readonly writer: ResourceWriter<G>;
  /** Remote groups a write names, read just before it (its check looks them up), per call. */
  private readonly known = new AsyncLocalStorage<ReadonlyMap<string, G>>();

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator }) {
    this.writer = new ResourceWriter(SECURITY_GROUP_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", "rules", "stateless"],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateSecurityGroupRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.rules.length > 0) draft["rules"] = r.rules.map((x) => clone(SecurityGroupRuleSchema, x));
        draft["stateless"] = r.stateless;
      },
      check: (next, cur) => {
        const v = new Violations();
        checkGroupName(v, next.name);
        if (cur?.name === DEFAULT_SECURITY_GROUP && next.name !== DEFAULT_SECURITY_GROUP) v.add("name", "IMMUTABLE", `the project's "${DEFAULT_SECURITY_GROUP}" group keeps its name`);
        this.checkRules(v, "rules", next, cur);
        throwIfViolations(v.list);
      },
    });
  }

  /** Rules checked and completed; unchanged rules keep their ids, new ones get one; duplicates and unknown remote groups refused. */
  private checkRules(v: Violations, field: string, g: G, cur: G | undefined): void {
    if (g.rules.length > NETWORK_LIMITS.rulesMax) v.add(field, "TOO_MANY", `at most ${NETWORK_LIMITS.rulesMax} rules, got ${g.rules.length}`);
    const before = new Map((cur?.rules ?? []).map((r) => [ruleKey(r), r.id]));
    const seen = new Map<string, number>();
    g.rules.forEach((r, i) => {
      const f = `${field}[${i}]`;
      const n = v.list.length;
      checkRule(v, f, r);
      if (r.remote.case === "remoteGroupId" && r.remote.value !== g.id) {
        const remote = this.known.getStore()?.get(r.remote.value);
        if (!remote || remote.projectId !== g.projectId) v.add(`${f}.remote_group_id`, "NOT_FOUND", `security group '${r.remote.value}' does not exist in project '${g.projectId}'`);
      }
      if (v.list.length > n) return;
      const key = ruleKey(r);
      if (seen.has(key)) v.add(f, "DUPLICATE", `is the same rule as ${field}[${seen.get(key)}]`);
      seen.set(key, i);
      r.id = before.get(key) ?? this.deps.ids.newId();
    });
  }

  /** Runs `write` with the remote groups `rules` name read (the check looks them up). */
  private async withRemotes<R>(rules: readonly SecurityGroupRule[], write: () => Promise<R>): Promise<R> {
    const ids = [...new Set(rules.flatMap((r) => (r.remote.case === "remoteGroupId" ? [r.remote.value] : [])))].filter((id) => ID_PATTERN.test(id));
    const known = new Map<string, G>();
    for (const id of ids) {
      const g = await this.deps.store.of(SECURITY_GROUP_KIND).get(id);
      if (g) known.set(id, g);
    }
    return this.known.run(known, write);
  }

  async create(req: CreateSecurityGroupRequest): Promise<SecurityGroup> {
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const v = new Violations();
    checkGroupName(v, req.name);
    throwIfViolations([...v.list, ...commonViolations(req)]);
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    await this.ensureDefault(projectId);
    const rules = req.rules.length > 0 ? req.rules.map((r) => clone(SecurityGroupRuleSchema, r)) : ANY_EGRESS.map((r) => create(SecurityGroupRuleSchema, r));
    return this.withRemotes(rules, () => this.writer.create({ name: req.name, projectId, labels: req.labels, description: req.description, rules, stateless: req.stateless }));
  }

  async update(req: UpdateSecurityGroupRequest): Promise<SecurityGroup> {
    requireWellFormedId("id", req.id);
    return this.withRemotes(req.rules, () => this.writer.update(req.id, UpdateSecurityGroupRequestSchema, req));
  }

  /** AddSecurityGroupRules: 1-100 rules; one equal to a rule of the group (ignoring id and description) is not added again. */
  async addRules(req: AddSecurityGroupRulesRequest): Promise<SecurityGroup> {
    requireWellFormedId("security_group_id", req.securityGroupId);
    const v = new Violations();
    if (req.rules.length < 1 || req.rules.length > NETWORK_LIMITS.rulesPerCallMax) v.add("rules", "OUT_OF_RANGE", `must be 1-${NETWORK_LIMITS.rulesPerCallMax} rules, got ${req.rules.length}`);
    throwIfViolations(v.list);
    return this.withRemotes(req.rules, () =>
      this.changeRules(req.securityGroupId, (g) => {
        const have = new Set(g.rules.map(ruleKey));
        const adding = create(SecurityGroupSchema, { id: g.id, projectId: g.projectId, rules: req.rules.map((r) => clone(SecurityGroupRuleSchema, r)) }) as G;
        const check = new Violations();
        this.checkRules(check, "rules", adding, g);
        throwIfViolations(check.list);
        const fresh = adding.rules.filter((r) => !have.has(ruleKey(r)));
        if (fresh.length === 0) return undefined;
        if (g.rules.length + fresh.length > NETWORK_LIMITS.rulesMax) {
          throwIfViolations([{ field: "rules", reason: "TOO_MANY", description: `the group would have ${g.rules.length + fresh.length} rules, more than ${NETWORK_LIMITS.rulesMax}` }]);
        }
        g.rules.push(...fresh);
        return g;
      }),
    );
  }

  /** RemoveSecurityGroupRules: 1-100 rule ids; ids not in the group are ignored. */
  async removeRules(req: RemoveSecurityGroupRulesRequest): Promise<SecurityGroup> {
    requireWellFormedId("security_group_id", req.securityGroupId);
    const v = new Violations();
    if (req.ruleIds.length < 1 || req.ruleIds.length > NETWORK_LIMITS.rulesPerCallMax) v.add("rule_ids", "OUT_OF_RANGE", `must be 1-${NETWORK_LIMITS.rulesPerCallMax} ids, got ${req.ruleIds.length}`);
    throwIfViolations(v.list);
    const gone = new Set(req.ruleIds);
    return this.changeRules(req.securityGroupId, (g) => {
      const kept = g.rules.filter((r) => !gone.has(r.id));
      if (kept.length === g.rules.length) return undefined;
      g.rules = kept;
      return g;
    });
  }

  private changeRules(id: string, change: (g: G) => G | undefined): Promise<G> {
    return this.deps.store.of(SECURITY_GROUP_KIND).update(
      id,
      (cur) => {
        const next = change(cur);
        if (next) next.updatedAt = timestampFromMs(this.deps.clock.now());
        return next;
      },
      { actor: "api" },
    );
  }

  /**
   * DeleteSecurityGroup: refused for the project's "default" group, while ports use the
   * group (naming them) and while other groups' rules name it (naming them).
   */
  async delete(req: DeleteSecurityGroupRequest, budget: Budget): Promise<void> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(SECURITY_GROUP_KIND).get(req.id);
    if (!cur) throw notFound("security group", req.id);
    const referrers: string[] = [];
    for await (const g of allOf(this.deps.store.of(SECURITY_GROUP_KIND), { where: { project_id: cur.projectId } })) {
      if (g.id !== cur.id && g.rules.some((r) => r.remote.case === "remoteGroupId" && r.remote.value === cur.id)) referrers.push(`'${g.id}' (${g.name})`);
    }
    const ports: string[] = [];
    if (cur.portCount > 0) {
      for await (const p of allOf(this.deps.store.of(PORT_KIND), { where: { project_id: cur.projectId } })) if (p.spec?.securityGroupIds.includes(cur.id)) ports.push(`'${p.id}'`);
    }
    await this.writer.delete(req.id, budget, (now) => {
      if (now.name === DEFAULT_SECURITY_GROUP) throw new QuantixError("failed_precondition", `security group '${now.id}' is project '${now.projectId}''s "${DEFAULT_SECURITY_GROUP}" group, which cannot be deleted`);
      if (now.portCount > 0) throw new QuantixError("failed_precondition", `security group '${now.id}' is used by ${now.portCount} port(s): ${ports.slice(0, 20).join(", ")}${ports.length > 20 ? ", ..." : ""}; take it off them first`);
      if (referrers.length > 0) throw new QuantixError("failed_precondition", `security group '${now.id}' is named by rules of security group ${referrers.join(", ")}; remove those rules first`);
    });
  }

  /** The project's "default" group, made if it has none yet (by whichever concurrent caller comes first). */
  async ensureDefault(projectId: string): Promise<G> {
    const coll = this.deps.store.of(SECURITY_GROUP_KIND);
    const find = async () => (await coll.list({ where: { project_id: projectId, name: DEFAULT_SECURITY_GROUP }, order: { field: "name", desc: false }, limit: 1 })).items[0];
    const found = await find();
    if (found) return found;
    const id = this.deps.ids.newId();
    const now = timestampFromMs(this.deps.clock.now());
    const rules = [
      ...ANY_EGRESS,
      ...[EtherType.IPV4, EtherType.IPV6].map((ethertype) => ({ direction: SecurityGroupRuleDirection.INGRESS, ethertype, remote: { case: "remoteGroupId" as const, value: id } })),
    ].map((r) => create(SecurityGroupRuleSchema, { ...r, id: this.deps.ids.newId() }));
    const g = create(SecurityGroupSchema, { id, projectId, name: DEFAULT_SECURITY_GROUP, description: "Allows all egress, and ingress from the group's own members.", rules, createdAt: now, updatedAt: now }) as G;
    try {
      return await coll.create(g, { actor: "api" });
    } catch (err) {
      if (err instanceof QuantixError && err.code === "already_exists") {
        const other = await find();
        if (other) return other;
      }
      throw err;
    }
  }
}

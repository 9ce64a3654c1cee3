import { LabelOperator, type LabelSelector } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";

/** Nodes (any key type) with how many of their VMs carry a term. */
export type Posting<N> = ReadonlyMap<N, number>;

const pairKey = (key: string, value: string) => JSON.stringify([key, value]);
const keyKey = (key: string) => JSON.stringify([key]);

/**
 * Which nodes host VMs with a label: for every key=value pair and every key, the nodes
 * with a count of such VMs (entries at zero are removed). Updated as VMs are placed and
 * taken off; read by affinity rules so they look only at nodes that may match.
 */
export class LabelIndex<N> {
  private readonly postings = new Map<string, Map<N, number>>();

  add(node: N, labels: Readonly<Record<string, string>>): void {
    for (const k of Object.keys(labels)) {
      this.bump(pairKey(k, labels[k]!), node, 1);
      this.bump(keyKey(k), node, 1);
    }
  }

  remove(node: N, labels: Readonly<Record<string, string>>): void {
    for (const k of Object.keys(labels)) {
      this.bump(pairKey(k, labels[k]!), node, -1);
      this.bump(keyKey(k), node, -1);
    }
  }

  /**
   * The postings of a selector's most selective indexed term, whose union holds every node
   * hosting a VM the selector matches: a match_labels pair, an IN requirement (one posting
   * per value; none when it lists no value, which matches nothing) or an EXISTS key.
   * Undefined when no term can be indexed: every node is a candidate.
   */
  narrowest(selector: LabelSelector): Posting<N>[] | undefined {
    let best: Posting<N>[] | undefined;
    let bestSize = Infinity;
    const consider = (postings: Posting<N>[]) => {
      let size = 0;
      for (const p of postings) size += p.size;
      if (size < bestSize) {
        best = postings;
        bestSize = size;
      }
    };
    for (const k in selector.matchLabels) consider([this.get(pairKey(k, selector.matchLabels[k]!))]);
    for (const req of selector.matchExpressions) {
      if (req.operator === LabelOperator.IN) consider(req.values.map((v) => this.get(pairKey(req.key, v))));
      else if (req.operator === LabelOperator.EXISTS) consider([this.get(keyKey(req.key))]);
      else if (req.operator === LabelOperator.UNSPECIFIED) consider([]);
    }
    return best;
  }

  private get(key: string): Posting<N> {
    return this.postings.get(key) ?? new Map<N, number>();
  }

  private bump(key: string, node: N, by: number): void {
    let p = this.postings.get(key);
    if (!p) this.postings.set(key, (p = new Map()));
    const n = (p.get(node) ?? 0) + by;
    if (n > 0) p.set(node, n);
    else {
      p.delete(node);
      if (p.size === 0) this.postings.delete(key);
    }
  }
}

import { LabelOperator, type LabelSelector } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";

/** A node as the label index knows it: its position among the nodes in id order (-1: not one of them). */
export interface IndexedNode {
  readonly idx: number;
}

/**
 * The nodes hosting VMs that carry one term (a key=value pair or a key), with how many.
 * `dense`, made the first time a large posting is read, flags the same nodes by position
 * and is kept up to date from then on (until the nodes are re-sorted).
 */
export interface Posting<N extends IndexedNode> {
  readonly counts: Map<N, number>;
  dense?: Uint8Array | undefined;
}

/** Postings at least this large are read through their dense flags. */
const DENSE_MIN = 32;

// Length-prefixed, so no key or value can make one term's name another's.
const pairKey = (key: string, value: string) => `${key.length}:${key}=${value}`;
const keyKey = (key: string) => `${key.length}:${key}`;

/**
 * Which nodes host VMs with a label: for every key=value pair and every key, the nodes
 * with a count of such VMs (entries at zero are removed). Updated as VMs are placed and
 * taken off; read by affinity rules so they look only at nodes that may match.
 */
export class LabelIndex<N extends IndexedNode> {
  private readonly postings = new Map<string, Posting<N>>();
  private readonly empty: Posting<N> = { counts: new Map() };

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

  /** Forgets every dense flag array (the nodes' positions changed). */
  dropDense(): void {
    for (const p of this.postings.values()) p.dense = undefined;
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
      for (const p of postings) size += p.counts.size;
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

  /** A large posting's dense flags over `n` node positions (made now if need be); undefined for a small one. */
  denseOf(p: Posting<N>, n: number): Uint8Array | undefined {
    if (p.counts.size < DENSE_MIN) return undefined;
    if (!p.dense) {
      p.dense = new Uint8Array(n);
      for (const node of p.counts.keys()) if (node.idx >= 0) p.dense[node.idx] = 1;
    }
    return p.dense;
  }

  private get(key: string): Posting<N> {
    return this.postings.get(key) ?? this.empty;
  }

  private bump(key: string, node: N, by: number): void {
    let p = this.postings.get(key);
    if (!p) this.postings.set(key, (p = { counts: new Map() }));
    const n = (p.counts.get(node) ?? 0) + by;
    if (n > 0) p.counts.set(node, n);
    else {
      p.counts.delete(node);
      if (p.counts.size === 0) this.postings.delete(key);
    }
    if (p.dense && node.idx >= 0) p.dense[node.idx] = n > 0 ? 1 : 0;
  }
}

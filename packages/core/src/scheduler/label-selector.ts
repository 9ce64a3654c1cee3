import { LabelOperator, type LabelSelector } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";

/**
 * Whether labels satisfy a selector: every match_labels pair and every match_expressions
 * requirement. An empty selector matches everything (as Kubernetes' does).
 */
export function selectorMatches(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  for (const key in selector.matchLabels) {
    if (labels[key] !== selector.matchLabels[key]) return false;
  }
  for (const req of selector.matchExpressions) {
    const value = Object.hasOwn(labels, req.key) ? labels[req.key] : undefined;
    switch (req.operator) {
      case LabelOperator.IN:
        if (value === undefined || !req.values.includes(value)) return false;
        break;
      case LabelOperator.NOT_IN:
        if (value !== undefined && req.values.includes(value)) return false;
        break;
      case LabelOperator.EXISTS:
        if (value === undefined) return false;
        break;
      case LabelOperator.DOES_NOT_EXIST:
        if (value !== undefined) return false;
        break;
      case LabelOperator.UNSPECIFIED:
        // Validation refuses it; a requirement with no operator matches nothing rather than everything.
        return false;
      default: {
        const never: never = req.operator;
        return never;
      }
    }
  }
  return true;
}

"""Robustness evaluation: out-of-domain sets and a word-substitution attack (kdx/robustness/suite.py).

Kept free of heavy imports: the report reads `flatten` only."""


def flatten(robustness: dict | None) -> dict[str, float]:
    """A results.json "robustness" entry as metrics: `robustness/ood/<set>/acc` and
    `robustness/attack/<name>` (numbers only)."""
    robustness = robustness or {}
    flat = {f"robustness/ood/{name}/acc": r["acc"] for name, r in robustness.get("ood", {}).items() if "acc" in r}
    flat.update({f"robustness/attack/{k}": v for k, v in robustness.get("attack", {}).items()
                 if isinstance(v, (int, float))})
    return flat

"""The robustness suite of a trained text classifier (the Combined-KD paper's robustness claim):
accuracy on the task's out-of-domain sets (kdx/robustness/ood.py) and under a word-substitution
attack on the task's validation split (kdx/robustness/attack.py).

Settings (conf/robustness/standard.yaml, `robustness.*`):
    ood.max_examples      examples read from each out-of-domain set (null: all)
    ood.files.<set>       a local file instead of the hub for that set
    attack.examples       validation examples attacked (the first N)
    attack.candidates / min_similarity / max_queries   the attack's knobs

Results (`results.json` → "robustness"): {"ood": {set: {acc, examples, source} | {error}},
"attack": {examples, clean_acc, attacked_acc, success_rate, mean_queries, split, settings}}; flattened
(kdx.robustness.flatten) as `robustness/ood/<set>/acc`, `robustness/attack/<name>` for
`python -m kdx.report --metric`.
"""

from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError
from kdx.robustness.attack import AttackConfig, Victim, attack_accuracy
from kdx.robustness.ood import OodSet, load_hub, read_local, sets_for


def ood_accuracy(model, tokenizer, ood: OodSet, examples, max_length: int, batch_size: int = 64) -> float:
    victim = Victim(model, tokenizer, max_length, batch_size)
    probs = victim.probabilities([a for a, _, _ in examples], [b for _, b, _ in examples])
    predicted = [ood.from_model[int(c)] for c in probs.argmax(-1).tolist()]
    return sum(p == y for p, (_, _, y) in zip(predicted, examples)) / max(1, len(examples))


def task_examples(task, split: str, limit: int | None) -> list[tuple[str, str | None, int]]:
    if not hasattr(task, "splits"):
        raise KdxError(f"the robustness suite attacks text classification tasks, not {task.spec.name}",
                       "run it on a GLUE-style task (task=glue/...)")
    rows = task.splits()[split][:limit] if limit else task.splits()[split]
    return [(ex.text_a, ex.text_b, int(ex.label)) for ex in rows]


def run_suite(model, tokenizer, task, settings: DictConfig | dict, max_length: int = 128) -> dict:
    settings = OmegaConf.create(settings) if isinstance(settings, dict) else settings
    if task.spec.family != "classification":
        raise KdxError(f"the robustness suite needs a classification task, {task.spec.name} is {task.spec.family}",
                       "run it on a GLUE classification task")
    model.eval()
    results = {"ood": {}}
    files = settings.ood.get("files") or {}
    for ood in sets_for(task.spec.name):
        try:
            if files.get(ood.name):
                examples, source = read_local(files[ood.name], ood), str(files[ood.name])
            else:
                examples, source = load_hub(ood), ood.hub_id
        except KdxError as err:       # one unavailable set does not stop the others
            results["ood"][ood.name] = {"error": str(err)}
            continue
        examples = examples[: settings.ood.max_examples] if settings.ood.get("max_examples") else examples
        results["ood"][ood.name] = {"acc": ood_accuracy(model, tokenizer, ood, examples, max_length),
                                    "examples": len(examples), "source": source}
    attack = settings.attack
    split = task.spec.eval_splits[0]
    config = AttackConfig(candidates=attack.candidates, min_similarity=attack.min_similarity,
                          max_queries=attack.max_queries, max_length=max_length)
    results["attack"] = {**attack_accuracy(model, tokenizer, task_examples(task, split, attack.examples), config),
                         "split": split, "settings": {"candidates": config.candidates,
                                                      "min_similarity": config.min_similarity,
                                                      "max_queries": config.max_queries}}
    return results

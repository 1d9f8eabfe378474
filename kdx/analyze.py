"""`python -m kdx.analyze attention model=<causal LM pair> task=<text source> [analyze.*=...]`:
how alike the attention of the teacher's layers is, and which layers EchoAtt would share
(docs/methods.md §7).

Writes `analyze.output` (JSON: `similarity` L × L, `per_layer_score`, `plan` for
`analyze.ratio`, the largest-gap plan, the plans for the paper's three ratios, the ranking) and
beside it `<stem>_similarity.png` (heatmap) and `<stem>_scores.png` (per-layer bar chart, the
planned layers highlighted). The model and the task are composed from the same config groups as
a trial (`model=smollm2`, `task=lm/text task.data_dir=DIR`, ...); the analysis reads
`model.teacher` as built (pre-trained weights) and `analyze.samples` blocks of exactly
`analyze.seq_len` tokens of the task's training text.
"""

import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdx.__main__ import config_dir
from kdx.components import instantiate_component
from kdx.errors import KdxError
from kdx.models.attention_similarity import (attention_similarity, largest_gap_plan, layer_scores, plan_summary,
                                             ranked_inner_layers, ratio_plan)
from kdx.models.echoatt_plan import analysis_blocks
from kdx.models.student import build
from kdx.models.tokenizer import build_tokenizer
from kdx.plots import bar_chart, heatmap
from kdx.results import write_json_atomic

ANALYSES = ("attention",)
DEFAULTS = {"samples": 8, "seq_len": 256, "ratio": 0.41, "paper_ratios": [0.23, 0.41, 0.77],
            "output": "outputs/analysis/attention.json"}


def settings(overrides: list[str], defaults: dict = DEFAULTS, prefix: str = "analyze") -> OmegaConf:
    """The command's own `<prefix>.*` settings (not part of the trial config) over `defaults`."""
    base = OmegaConf.create(defaults)
    OmegaConf.set_struct(base, True)
    try:
        return OmegaConf.merge(base, OmegaConf.from_dotlist([o[len(prefix) + 1:] for o in overrides]))
    except OmegaConfBaseException as err:
        raise KdxError(f"bad {prefix} setting in {overrides}: {str(err).splitlines()[0]}",
                       f"the settings are {prefix}.{f', {prefix}.'.join(defaults)}") from None


def compose_config(overrides: list[str]):
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception as err:   # Hydra's own override/composition errors
        raise KdxError(f"cannot compose the config from {overrides}: {str(err).splitlines()[0]}",
                       "check the overrides (e.g. model=smollm2 task=lm/text task.data_dir=DIR)") from None


def analyse_attention(cfg, opts) -> dict:
    if cfg.hardware.get("torch_threads"):
        torch.set_num_threads(int(cfg.hardware.torch_threads))
    task = instantiate_component(cfg.task, "task")
    if not hasattr(task, "documents"):
        raise KdxError(f"task={cfg.task.name} is not a text source", "use task=lm/text task.data_dir=DIR or task=lm/sst2")
    tokenizer = build_tokenizer(cfg.model.tokenizer, task, cfg.paths.cache_dir)
    blocks = analysis_blocks(task.documents()["train"], tokenizer, int(opts.samples), int(opts.seq_len))
    teacher = build(cfg.model.teacher, len(tokenizer), len(tokenizer), family="language_modeling")
    start = time.time()
    similarity = attention_similarity(teacher, blocks)
    elapsed = time.time() - start
    scores = layer_scores(similarity)
    count = len(scores)
    plan = ratio_plan(scores, float(opts.ratio))
    return {
        "model": cfg.model.name, "teacher": str(cfg.model.teacher.get("name_or_path", cfg.model.teacher._target_)),
        "task": cfg.task.name, "samples": int(opts.samples), "seq_len": int(opts.seq_len), "layers": count,
        "similarity": similarity.tolist(),
        "per_layer_score": scores.tolist(),
        "ranking": ranked_inner_layers(scores),
        "ratio": float(opts.ratio),
        "plan": plan,
        "plan_detail": plan_summary(plan, count),
        "largest_gap_plan": largest_gap_plan(scores),
        "plans_by_ratio": {str(r): ratio_plan(scores, float(r)) for r in opts.paper_ratios
                           if round(float(r) * count) <= count - 2},   # those the depth allows
        "analysis_time_s": round(elapsed, 2),
    }


def write_figures(result: dict, output: Path) -> tuple[Path, Path]:
    heat = output.with_name(output.stem + "_similarity.png")
    bars = output.with_name(output.stem + "_scores.png")
    heatmap(result["similarity"], heat, f"attention cosine similarity, {result['model']} "
            f"({result['samples']} x {result['seq_len']} tokens)")
    bar_chart(result["per_layer_score"], bars, "mean similarity to the other layers",
              highlighted=set(result["plan"]), legend=f"shared at ratio {result['ratio']}")
    return heat, bars


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ANALYSES:
        print(f"usage: python -m kdx.analyze {{{','.join(ANALYSES)}}} model=... task=... analyze.samples=N "
              "analyze.seq_len=L analyze.output=FILE.json", file=sys.stderr)
        return 2
    overrides = args[1:]
    try:
        opts = settings([o for o in overrides if o.startswith("analyze.")])
        cfg = compose_config([o for o in overrides if not o.startswith("analyze.")])
        result = analyse_attention(cfg, opts)
    except KdxError as err:
        print(f"kdx: error: {err}", file=sys.stderr)
        return 2
    output = Path(opts.output)
    write_json_atomic(output, result)
    heat, bars = write_figures(result, output)
    print(f"[kdx] attention similarity of {result['layers']} layers -> {output} ({heat.name}, {bars.name})")
    print(f"[kdx] plan at ratio {result['ratio']}: {result['plan']}; largest-gap cut: {result['largest_gap_plan']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

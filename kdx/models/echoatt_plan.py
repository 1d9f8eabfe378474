"""Which layers an EchoAtt student shares, from its spec (`model.student.*`, init=shared):

- `share: [2, 5, 4]`: exactly these layers;
- `share_ratio: 0.41` with `similarity_file: FILE.json`: the plan for that ratio from a saved
  analysis (`python -m kdx.analyze attention ... analyze.output=FILE.json`);
- `share_ratio: 0.41` alone: the analysis is run on the teacher first, on `analysis.samples`
  blocks of `analysis.seq_len` tokens of the text under `analysis.data_dir` (a folder of
  *.txt / *.jsonl files, or a GLUE SST-2 / CoLA folder), tokenized by `analysis.tokenizer`.
"""

import json
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from kdx.errors import KdxError
from kdx.models.attention_similarity import attention_similarity, layer_scores, ratio_plan
from kdx.models.echoatt import decoder_layers, share_attention
from kdx.tasks.lm import GLUE_SENTENCE_COLUMNS, LMTask, pack


def analysis_blocks(documents: list[str], tokenizer, samples: int, seq_len: int) -> torch.Tensor:
    """The first `samples` blocks of exactly `seq_len` tokens of the documents joined by the
    end-of-text token (no padding: the paper's samples all have the same length)."""
    if samples < 1 or seq_len < 2:
        raise KdxError(f"analyze.samples={samples}, analyze.seq_len={seq_len}: need at least 1 sample of 2 tokens",
                       "e.g. analyze.samples=8 analyze.seq_len=256")
    blocks = pack(documents, tokenizer, seq_len, max_blocks=samples + 1)
    full = blocks[(blocks >= 0).all(1)][:samples, :seq_len]
    if len(full) < samples:
        raise KdxError(f"the text holds only {len(full)} blocks of {seq_len} tokens, {samples} were asked for",
                       "lower analyze.samples or analyze.seq_len, or give more text")
    return full


def corpus_task(data_dir: str) -> LMTask:
    """A text source for the analysis: a GLUE SST-2 / CoLA folder or a folder of text files."""
    folder = Path(str(data_dir)).expanduser()
    glue = folder.name in GLUE_SENTENCE_COLUMNS and (folder / "train.tsv").exists()
    return LMTask(name="echoatt-analysis", source="glue" if glue else "text", data_dir=str(folder))


def scores_from_file(path: str, count: int) -> torch.Tensor:
    file = Path(str(path)).expanduser()
    try:
        saved = json.loads(file.read_text())
        scores = torch.tensor(saved["per_layer_score"], dtype=torch.float64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise KdxError(f"model.student.similarity_file={path!r} is not an attention analysis ({type(err).__name__}: {err})",
                       "write one with `python -m kdx.analyze attention ... analyze.output=FILE.json`") from None
    if len(scores) != count:
        raise KdxError(f"{file} scores {len(scores)} layers, but the teacher has {count}",
                       "analyse the same checkpoint the student is made from")
    return scores


def analysed_scores(teacher: nn.Module, analysis: dict) -> torch.Tensor:
    from kdx.models.tokenizer import build_tokenizer

    if not analysis.get("data_dir"):
        raise KdxError("model.student.share_ratio needs a similarity analysis, but neither "
                       "model.student.similarity_file nor model.student.analysis.data_dir is set",
                       "give model.student.share=[...], a similarity_file from `python -m kdx.analyze attention`, "
                       "or model.student.analysis.data_dir=DIR (text to analyse)")
    spec = OmegaConf.create(analysis.get("tokenizer") or {})
    if spec.get("kind", "pretrained") != "pretrained":
        raise KdxError("the on-the-fly attention analysis needs the checkpoint's own tokenizer, "
                       f"but model.tokenizer.kind={spec.get('kind')!r}",
                       "give model.student.share=[...] or model.student.similarity_file")
    task = corpus_task(analysis["data_dir"])
    tokenizer = build_tokenizer(spec, task, analysis.get("cache_dir") or ".")
    blocks = analysis_blocks(task.documents()["train"], tokenizer, int(analysis.get("samples", 8)),
                             int(analysis.get("seq_len", 256)))
    implementation = teacher.config._attn_implementation
    scores = layer_scores(attention_similarity(teacher, blocks))
    teacher.set_attn_implementation(implementation)
    return scores


def plan_for(teacher: nn.Module, spec: DictConfig | dict) -> list[int]:
    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    if spec.get("share") is not None:
        return list(spec["share"])
    ratio = spec.get("share_ratio")
    if ratio is None:
        raise KdxError("model.student.init=shared needs model.student.share=[...] or model.student.share_ratio",
                       "e.g. model.student.share_ratio=0.41, or model.student.share=[3,4,5]")
    count = len(decoder_layers(teacher))
    if spec.get("similarity_file"):
        scores = scores_from_file(spec["similarity_file"], count)
    else:
        scores = analysed_scores(teacher, spec.get("analysis") or {})
    return ratio_plan(scores, float(ratio))


def shared_student(teacher: nn.Module, spec: DictConfig | dict) -> nn.Module:
    """The EchoAtt student made from `teacher` (changed in place)."""
    plan = plan_for(teacher, spec)
    print(f"[kdx] EchoAtt student: layers {sorted(plan)} reuse an earlier layer's attention "
          f"({len(plan)} of {len(decoder_layers(teacher))})")
    return share_attention(teacher, plan)

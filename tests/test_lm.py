"""Language modelling: packing a corpus into shifted blocks, the LM task's splits and errors, the
perplexity and token-accuracy metrics against direct computations, family-aware model heads,
and a KD trial on the tiny LLaMA pair end to end."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import BertForTokenClassification, LlamaForCausalLM

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.metrics import Perplexity, TokenAccuracy
from kdx.models.hf import bert_from_arch, llama_from_arch
from kdx.models.student import build
from kdx.tasks.lm import LMTask, PackedBlocks, pack

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


class CharTokenizer:
    """One id per character (a=1, b=2, ...), end-of-text id 0: packing is checkable by hand."""
    eos_token_id = 0
    pad_token_id = 0
    sep_token_id = None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) - 96 for c in t] for t in texts]}

    def __len__(self):
        return 27


def test_pack_shifts_labels_and_predicts_every_token_once():
    blocks = pack(["abc", "de"], CharTokenizer(), length=3)
    # stream: a b c <eos> d e <eos> = 1 2 3 0 4 5 0; blocks of 4 tokens overlapping by one
    assert blocks.tolist() == [[1, 2, 3, 0], [0, 4, 5, 0]]
    data = PackedBlocks(pack(["abcd"], CharTokenizer(), length=3), pad_token_id=0)
    # stream 1 2 3 4 0: the second block is [4, 0] padded
    assert data.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert data.labels.tolist() == [[2, 3, 4], [0, IGNORE_INDEX, IGNORE_INDEX]]
    assert data.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    predicted = [t for row in data.labels.tolist() for t in row if t != IGNORE_INDEX]
    assert predicted == [2, 3, 4, 0]   # every token after the first, once


def test_text_task_splits_by_folder_or_by_every_kth_document(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"doc {i}" for i in range(10)) + "\n\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "doc 10"}) + "\n")
    splits = LMTask("lm/text", data_dir=str(tmp_path), val_fraction=0.25).documents()
    assert splits["val"] == ["doc 3", "doc 7"] and len(splits["train"]) == 9
    (tmp_path / "train").mkdir(), (tmp_path / "dev").mkdir()
    (tmp_path / "train" / "t.txt").write_text("one\ntwo\n")
    (tmp_path / "dev" / "d.txt").write_text("three\n")
    assert LMTask("lm/text", data_dir=str(tmp_path)).documents() == {"train": ["one", "two"], "val": ["three"]}


def test_text_task_errors_name_the_problem(tmp_path):
    with pytest.raises(KdxError, match="data_dir is not set"):
        LMTask("lm/text")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(KdxError, match=r"bad.jsonl:2: no string field 'text'"):
        LMTask("lm/text", data_dir=str(tmp_path)).documents()
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(KdxError, match=r"bad.jsonl:1: not valid JSON"):
        LMTask("lm/text", data_dir=str(tmp_path)).documents()


def test_perplexity_and_token_accuracy_sum_over_the_split_before_dividing():
    torch.manual_seed(0)
    batches = [(torch.randn(2, 5, 7), torch.randint(7, (2, 5))), (torch.randn(1, 5, 7), torch.randint(7, (1, 5)))]
    batches[0][1][0, 3:] = IGNORE_INDEX
    ppl, acc = Perplexity(), TokenAccuracy()
    nll, correct, total = 0.0, 0, 0
    for logits, labels in batches:
        ppl.update(logits, labels), acc.update(logits, labels)
        for b in range(labels.shape[0]):
            for t in range(labels.shape[1]):
                if labels[b, t] != IGNORE_INDEX:
                    nll -= F.log_softmax(logits[b, t], -1)[labels[b, t]].item()
                    correct += int(logits[b, t].argmax() == labels[b, t])
                    total += 1
    assert ppl.compute().item() == pytest.approx(math.exp(nll / total), rel=1e-6)
    assert acc.compute().item() == pytest.approx(correct / total)


def test_builders_give_the_head_of_the_task_family():
    arch = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert isinstance(bert_from_arch(2, 50, family="span_prediction", **arch), BertForTokenClassification)
    assert isinstance(llama_from_arch(0, 50, **arch), LlamaForCausalLM)
    with pytest.raises(KdxError, match="causal"):
        llama_from_arch(2, 50, family="classification", **arch)
    mlp = OmegaConf.create({"_target_": "kdx.models.mlp.MLP", "hidden_sizes": [4]})
    with pytest.raises(KdxError, match="sequence-level models"):
        build(mlp, 2, None, family="language_modeling")


def test_kd_trial_on_the_tiny_llama_pair(run_kdx, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "c.txt").write_text("\n".join(f"the cat sat on mat number {i % 7}" for i in range(80)))
    results = run_kdx("task=lm/text", f"task.data_dir={corpus}", "model=tiny_llama", "method=kd",
                      "trainer.max_steps=6", "data.max_length=16", tmp_path=tmp_path)
    assert results["status"] == "completed"
    assert results["main_metric"]["name"] == "val/perplexity"
    assert 1.0 < results["metrics"]["val/perplexity"] < 1000 and 0 <= results["metrics"]["val/token_acc"] <= 1
    assert results["params"]["student"] < results["params"]["teacher"]


@pytest.mark.skipif(not (SHARED_GLUE / "CoLA").is_dir(), reason="../shared/data/glue is absent")
def test_glue_sentences_as_a_corpus():
    splits = LMTask("lm/cola", source="glue", data_dir=str(SHARED_GLUE / "CoLA")).documents()
    assert len(splits["train"]) == 8551 and len(splits["val"]) == 1043
    assert splits["val"][0] == "The sailors rode the breeze clear of the rocks."

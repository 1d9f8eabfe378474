"""Zero-shot multiple choice by log-likelihood against a choice-by-choice computation written out
here, the item loaders, and the before/after comparison command on the tiny EchoAtt pair."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdx.errors import KdxError
from kdx.models.multiple_choice import Item, choice_log_likelihoods, evaluate_items, jsonl_items, suite_items

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


class WordTokenizer:
    """One id per known word (' a' and 'a' alike), pad 0."""
    pad_token_id = 0
    words = ["", "the", "cat", "sat", "dog", "ran", "mat", "yes", "no", "is", "it"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.words.index(w) for w in text.split()]}


def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=11, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=24, initializer_range=0.5)
    return LlamaForCausalLM(config).eval()


def test_choice_scores_are_the_summed_log_probabilities_of_the_choice_tokens():
    lm, tokenizer = model(), WordTokenizer()
    item = Item("the cat sat", (" mat", " dog ran", " is it yes"), 0)
    got = choice_log_likelihoods(lm, tokenizer, item)
    for choice, score in zip(item.choices, got):
        ids = tokenizer(item.context + choice)["input_ids"]
        start = len(tokenizer(item.context)["input_ids"])
        with torch.no_grad():   # each sequence alone, unpadded, token by token
            logits = lm(input_ids=torch.tensor([ids])).logits[0]
        expected = 0.0
        for t in range(start, len(ids)):
            row = logits[t - 1].tolist()
            expected += row[ids[t]] - math.log(sum(math.exp(v) for v in row))
        assert math.isclose(score, expected, rel_tol=1e-5, abs_tol=1e-5)
    best = max(range(3), key=got.__getitem__)
    result = evaluate_items(lm, tokenizer, [item, Item(item.context, item.choices, best)])
    assert result["acc"] == (1.0 if best == 0 else 0.5) and result["items"] == 2


def test_jsonl_items_and_their_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"context": "Q:", "choices": [" a", " b"], "label": 1}) + "\n\n")
    assert jsonl_items(good) == [Item("Q:", (" a", " b"), 1)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "Q:", "choices": [" a"], "label": 3}) + "\n")
    with pytest.raises(KdxError, match="bad.jsonl:1"):
        jsonl_items(bad)
    with pytest.raises(KdxError, match="unknown"):
        suite_items("hellaswag", None, None)


@pytest.mark.skipif(not (GLUE / "SST-2").is_dir(), reason="../shared/data/glue is absent")
def test_glue_suites():
    sst2, cola = suite_items("sst2", str(GLUE), None), suite_items("cola", str(GLUE), None)
    assert len(sst2) == 872 and len(cola) == 1043
    assert sst2[0].choices == (" negative", " positive") and sst2[0].context.startswith("Review: ")
    assert sum(i.label for i in cola) == 721     # CoLA dev: 721 acceptable sentences


def test_the_comparison_command_on_the_tiny_echoatt_pair(tmp_path, monkeypatch):
    from kdx.zeroshot import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "c.txt").write_text("\n".join(f"the cat sat on the mat number {i % 9}" for i in range(60)))
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps({"context": "the cat", "choices": [" sat", " mat"], "label": i % 2})
                               for i in range(4)))
    monkeypatch.setenv("KDX_CACHE_DIR", str(tmp_path / "cache"))
    output = tmp_path / "zs.json"
    assert main(["model=tiny_llama_echoatt", "task=lm/text", f"task.data_dir={corpus}", "data.max_length=16",
                 f"paths.cache_dir={tmp_path / 'cache'}", f"zeroshot.suites=[{items}]",
                 f"zeroshot.output={output}"]) == 0
    report = json.loads(output.read_text())
    assert report["teacher"]["params"] - report["student"]["params"] == 2 * (64 * 64 + 64 * 32)
    for row in (report["teacher"], report["student"]):
        assert row["val/perplexity"] > 1 and row["mc/items"]["items"] == 4


# ---- lm-evaluation-harness (the optional kdx[lmeval] extra) ---------------------------------------
def word_level_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "the", "cat", "sat", "dog", "ran", "mat", "yes", "no", "is"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


ITEMS = [Item("the cat", (" sat", " ran is"), 0), Item("the dog ran", (" yes", " no", " mat"), 2),
         Item("cat is", (" the mat", " dog"), 1), Item("the", (" cat sat", " dog ran", " is"), 1)]


@pytest.mark.slow   # the harness indexes its thousands of task files first (minutes on a busy CPU)
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="kdx[lmeval] is not installed")
def test_choice_scores_agree_with_lm_evaluation_harness(tmp_path):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from kdx.zeroshot import harness_scores

    lm, tokenizer = model(), word_level_tokenizer()
    harness = HFLM(pretrained=lm, tokenizer=tokenizer, batch_size=1)
    for item in ITEMS:
        requests = [Instance(request_type="loglikelihood", doc={}, arguments=(item.context, choice), idx=i)
                    for i, choice in enumerate(item.choices)]
        expected = [score for score, _ in harness.loglikelihood(requests, disable_tqdm=True)]
        assert choice_log_likelihoods(lm, tokenizer, item) == pytest.approx(expected, rel=1e-4, abs=1e-4)

    # a local task in the harness's own format, run through kdx's hook, gives kdx's accuracy
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps({"context": i.context, "choices": list(i.choices), "label": i.label})
                              for i in ITEMS))
    (tmp_path / "kdx_mc.yaml").write_text(
        "task: kdx_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{{{context}}}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: label\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n")
    scores = harness_scores(lm, tokenizer, ["kdx_mc"], None, include=str(tmp_path))
    assert scores["kdx_mc"]["acc,none"] == pytest.approx(evaluate_items(lm, tokenizer, ITEMS)["acc"])

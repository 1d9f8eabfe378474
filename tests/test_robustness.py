"""The robustness suite on cases whose answer is known: a model that ignores its input cannot be
attacked (0 % success), a model keyed on one word is broken by substituting that word with its
embedding neighbour, the query budget stops an attack, out-of-domain accuracy from local files
(labels mapped from the task's classes), and the suite after training and from `kdx.evaluate`."""

import json

import pytest
import torch
import torch.nn as nn
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from kdx import evaluate
from kdx.errors import KdxError
from kdx.robustness import flatten
from kdx.robustness.attack import AttackConfig, Neighbours, attack_accuracy
from kdx.robustness.ood import SETS, read_local
from kdx.robustness.suite import ood_accuracy

WORDS = ["[PAD]", "[UNK]", "the", "movie", "was", "good", "fine", "bad", "plot", "film"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


class ToyClassifier(nn.Module):
    """Two classes; logits = bias + key_weight · (count of the key word). key_weight 0: it ignores
    its input. The embedding table puts "fine" next to "good" (and "film" next to "movie")."""

    def __init__(self, key: str | None = "good", key_weight: float = 4.0):
        super().__init__()
        torch.manual_seed(0)
        # other words: positive entries off dims 0-1 (cosine > 0 among them, 0 with good/fine),
        # so no other word's nearest neighbour is "good" or "fine"
        table = torch.zeros(len(WORDS), 8)
        table[:, 2:] = torch.rand(len(WORDS), 6) + 0.1
        table[WORDS.index("good")] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
        table[WORDS.index("fine")] = torch.tensor([1.0, 0.05, 0, 0, 0, 0, 0, 0])
        table[WORDS.index("film")] = table[WORDS.index("movie")] + 0.01
        self.embeddings = nn.Embedding.from_pretrained(table)
        self.key_id = WORDS.index(key) if key else None
        self.key_weight = key_weight

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, input_ids, attention_mask=None, **_):
        hits = (input_ids == self.key_id).sum(-1).float() if self.key_id is not None else torch.zeros(len(input_ids))
        return torch.stack([torch.full_like(hits, 1.0), torch.zeros_like(hits) + self.key_weight * hits], dim=-1)


EXAMPLES = [("the movie was good", None, 1), ("good plot", None, 1), ("the film was bad", None, 0)]


def test_neighbours_come_from_the_embedding_table():
    tokenizer = word_tokenizer()
    neighbours = Neighbours(ToyClassifier().embeddings.weight, tokenizer, k=1, min_similarity=0.0)
    assert neighbours("good") == ["fine"] and neighbours("Movie") == ["film"]
    assert neighbours("unknownword") == [] and "[PAD]" not in neighbours.words


def test_a_model_that_ignores_its_input_is_never_broken():
    model = ToyClassifier(key=None)      # always class 0 (bias 1 vs 0)
    examples = [("the movie was good", None, 0), ("the plot was bad", None, 0), ("good", None, 1)]
    result = attack_accuracy(model, word_tokenizer(), examples, AttackConfig(candidates=5, max_queries=100))
    assert result["clean_acc"] == pytest.approx(2 / 3) and result["attacked_acc"] == pytest.approx(2 / 3)
    assert result["success_rate"] == 0.0 and result["mean_queries"] > 0


def test_a_model_keyed_on_one_word_is_broken_by_substituting_it():
    result = attack_accuracy(ToyClassifier(), word_tokenizer(), EXAMPLES, AttackConfig(candidates=1, max_queries=50))
    # both positives rest on "good": swapping it for its neighbour "fine" flips them; the negative
    # has no key word to remove, and no neighbour adds one
    assert result["clean_acc"] == pytest.approx(1.0)
    assert result["success_rate"] == pytest.approx(2 / 3)
    assert result["attacked_acc"] == pytest.approx(1 / 3)


def test_the_similarity_floor_removes_candidates_below_it():
    tokenizer, model = word_tokenizer(), ToyClassifier()
    table = torch.nn.functional.normalize(model.embeddings.weight, dim=-1)
    good_fine = float(table[WORDS.index("good")] @ table[WORDS.index("fine")])   # 0.9988
    assert Neighbours(model.embeddings.weight, tokenizer, k=1, min_similarity=good_fine - 1e-4)("good") == ["fine"]
    assert Neighbours(model.embeddings.weight, tokenizer, k=1, min_similarity=good_fine + 1e-4)("good") == []
    # without its one candidate the keyed model cannot be broken
    result = attack_accuracy(model, tokenizer, EXAMPLES,
                             AttackConfig(candidates=1, min_similarity=good_fine + 1e-4, max_queries=50))
    assert result["success_rate"] == 0.0 and result["attacked_acc"] == pytest.approx(1.0)


def test_the_query_budget_stops_the_attack():
    # 1 clean query + 4 deletions > 3: no substitution is ever tried
    result = attack_accuracy(ToyClassifier(), word_tokenizer(), EXAMPLES[:1], AttackConfig(candidates=1, max_queries=3))
    assert result["success_rate"] == 0.0 and result["mean_queries"] <= 3


def test_out_of_domain_accuracy_from_a_local_file(tmp_path):
    imdb = next(s for s in SETS["glue/sst2"] if s.name == "imdb")
    path = tmp_path / "imdb.tsv"
    path.write_text("text_a\tlabel\nthe movie was good\tpositive\nthe film was bad\t0\ngood plot\t0\n")
    examples = read_local(path, imdb)
    assert examples == [("the movie was good", None, 1), ("the film was bad", None, 0), ("good plot", None, 0)]
    assert ood_accuracy(ToyClassifier(), word_tokenizer(), imdb, examples, 32) == pytest.approx(2 / 3)
    hans = SETS["glue/mnli"][0]
    assert [hans.from_model[c] for c in range(3)] == [0, 1, 1]   # neutral, contradiction -> non-entailment
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text_a": "x", "label": "great"}) + "\n")
    with pytest.raises(KdxError, match="line 1"):
        read_local(bad, imdb)


# ---- after training and from kdx.evaluate ---------------------------------------------------------
def sst2_folder(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    positive = ["a good film", "good fun", "a fine good story", "the best movie", "good acting"]
    negative = ["a bad film", "dull and bad", "the worst movie", "bad acting", "a boring story"]
    rows = [(t, 1) for t in positive] + [(t, 0) for t in negative]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows * 4))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    (tmp_path / "imdb.tsv").write_text("text_a\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return folder


def test_suite_after_training_and_from_kdx_evaluate(run_kdx, tmp_path):
    data = sst2_folder(tmp_path)
    imdb = tmp_path / "imdb.tsv"
    results = run_kdx("task=glue/sst2", f"task.data_dir={data}", "method=finetune", "trainer.max_epochs=1",
                      "+robustness=standard", f"robustness.ood.files.imdb={imdb}",
                      f"robustness.ood.files.yelp={imdb}", "robustness.attack.examples=4",
                      "robustness.attack.max_queries=20", tmp_path=tmp_path)
    robustness = results["robustness"]
    assert set(robustness["ood"]) == {"imdb", "yelp"} and robustness["ood"]["imdb"]["examples"] == 10
    assert robustness["attack"]["examples"] == 4 and 0 <= robustness["attack"]["success_rate"] <= 1
    assert robustness["attack"]["settings"] == {"candidates": 8, "min_similarity": 0.5, "max_queries": 20}
    assert robustness["attack"]["attacked_acc"] <= robustness["attack"]["clean_acc"]
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["robustness"] == robustness
    # the same suite on the finished trial, from the command line (offline hub -> recorded error)
    code = evaluate.main([f"checkpoint={tmp_path / 'run'}", "suite=robustness", "robustness.attack.examples=3",
                          "robustness.attack.max_queries=10", f"robustness.ood.files.imdb={imdb}"])
    assert code == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())["robustness"]
    assert again["attack"]["examples"] == 3 and again["ood"]["imdb"]["acc"] == robustness["ood"]["imdb"]["acc"]
    assert "error" in again["ood"]["yelp"]         # not on the hub offline, and no file given
    assert "robustness/attack/success_rate" in flatten(again) and "robustness/ood/yelp/acc" not in flatten(again)
    assert evaluate.main([f"checkpoint={tmp_path / 'nowhere'}"]) == 2

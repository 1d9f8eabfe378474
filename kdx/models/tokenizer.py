"""Tokenizers: a pre-trained one from the checkpoint, or a WordPiece vocabulary trained on the
task's training text (the tiny pair), cached under the cache dir by content."""

import json
from pathlib import Path

from filelock import FileLock
from tokenizers import BertWordPieceTokenizer
from tokenizers.processors import BertProcessing
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from kdx.errors import KdxError
from kdx.models.gguf import checkpoint_folder
from kdx.models.location import hub_error, resolve
from kdx.hashing import digest

BERT_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]  # segment ids for sentence pairs
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                  "sep_token": "[SEP]", "mask_token": "[MASK]"}


def build_tokenizer(spec: DictConfig, task, cache_dir: str | Path):
    kind = spec.get("kind", "pretrained")
    if kind == "pretrained":
        if not spec.get("name_or_path"):
            raise KdxError("model.tokenizer.kind=pretrained needs model.tokenizer.name_or_path",
                           "set it to the checkpoint whose vocabulary the models embed (usually the teacher's)")
        location = checkpoint_folder(spec.name_or_path, spec.get("gguf_file"), cache_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve(location))
        except (OSError, ValueError) as err:
            raise hub_error(spec.name_or_path, err) from None
        return with_padding(tokenizer, spec.get("pad_with"))
    if kind == "wordpiece":
        return trained_wordpiece(task, int(spec.vocab_size), bool(spec.get("lowercase", True)), cache_dir)
    raise KdxError(f"model.tokenizer.kind={kind!r} is unknown", "use `pretrained` or `wordpiece`")


def with_padding(tokenizer, pad_with: str | None):
    """GPT-style vocabularies have no padding token; `pad_with: eos` pads with end-of-text (the
    models' config then names it as pad_token_id, so the classifier reads the last real token)."""
    if pad_with is None or tokenizer.pad_token is not None:
        return tokenizer
    token = getattr(tokenizer, f"{pad_with}_token", None)
    if token is None:
        raise KdxError(f"model.tokenizer.pad_with={pad_with!r}: the tokenizer has no {pad_with} token",
                       "use pad_with: eos (or unk) with a token the tokenizer defines")
    tokenizer.pad_token = token
    return tokenizer


def trained_wordpiece(task, vocab_size: int, lowercase: bool, cache_dir) -> PreTrainedTokenizerFast:
    texts = list(task.training_texts())
    key = digest({"texts": digest(texts, 32), "vocab_size": vocab_size, "lowercase": lowercase})
    folder = Path(cache_dir) / "tokenizers" / key
    path = folder / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not path.exists():
            wordpiece = BertWordPieceTokenizer(lowercase=lowercase)
            wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1,
                                          special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
            # The post-processor is only set up when [CLS]/[SEP] are in the vocabulary at creation
            # time, i.e. never for a fresh trainer: add it, so inputs read [CLS] text [SEP] as in BERT.
            wordpiece.post_processor = BertProcessing(
                (SPECIAL_TOKENS["sep_token"], wordpiece.token_to_id(SPECIAL_TOKENS["sep_token"])),
                (SPECIAL_TOKENS["cls_token"], wordpiece.token_to_id(SPECIAL_TOKENS["cls_token"])))
            tmp = folder / "tokenizer.json.tmp"
            tmp.write_text(json.dumps(with_canonical_ids(json.loads(wordpiece.to_str()))))
            tmp.replace(path)
    return PreTrainedTokenizerFast(tokenizer_file=str(path), model_input_names=BERT_INPUTS, **SPECIAL_TOKENS)


def with_canonical_ids(tokenizer_json: dict) -> dict:
    """The trainer breaks frequency ties in an order that changes from process to process, so the
    same text would get different token ids (and a differently initialised model) on every fresh
    cache. Ids are reassigned: special tokens keep theirs, the rest follow sorted order."""
    vocab = tokenizer_json["model"]["vocab"]
    specials = [token for token in SPECIAL_TOKENS.values() if token in vocab]
    assert [vocab[t] for t in specials] == list(range(len(specials))), "special tokens must come first"
    rest = sorted(t for t in vocab if t not in specials)
    tokenizer_json["model"]["vocab"] = {t: i for i, t in enumerate(specials + rest)}
    return tokenizer_json

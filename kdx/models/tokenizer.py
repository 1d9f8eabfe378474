"""Tokenizers: a pre-trained one from the checkpoint, or a WordPiece vocabulary trained on the
task's training text (the tiny pair), cached under the cache dir by content."""

from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from kdx.errors import KdxError
from kdx.models.location import hub_error, resolve
from kdx.trial import digest

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                  "sep_token": "[SEP]", "mask_token": "[MASK]"}


def build_tokenizer(spec: DictConfig, task, cache_dir: str | Path):
    kind = spec.get("kind", "pretrained")
    if kind == "pretrained":
        if not spec.get("name_or_path"):
            raise KdxError("model.tokenizer.kind=pretrained needs model.tokenizer.name_or_path",
                           "set it to the checkpoint whose vocabulary the models embed (usually the teacher's)")
        try:
            return AutoTokenizer.from_pretrained(resolve(spec.name_or_path))
        except (OSError, ValueError) as err:
            raise hub_error(spec.name_or_path, err) from None
    if kind == "wordpiece":
        return trained_wordpiece(task, int(spec.vocab_size), bool(spec.get("lowercase", True)), cache_dir)
    raise KdxError(f"model.tokenizer.kind={kind!r} is unknown", "use `pretrained` or `wordpiece`")


def trained_wordpiece(task, vocab_size: int, lowercase: bool, cache_dir) -> PreTrainedTokenizerFast:
    from tokenizers import BertWordPieceTokenizer

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
            tmp = folder / "tokenizer.json.tmp"
            wordpiece.save(str(tmp))
            tmp.replace(path)
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **SPECIAL_TOKENS)

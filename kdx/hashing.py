"""Content hashes that name things on disk (trial folders, teacher store entries, tokenizer caches)."""

import hashlib
import json


def digest(data, length: int = 12) -> str:
    """Stable short hash of JSON-serialisable data (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]

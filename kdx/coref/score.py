"""`python -m kdx.coref.score KEY RESPONSE [--json]`: coreference scores of a response CoNLL file
against a key, like the CoNLL reference scorer's `all` mode.

Parts are matched by `(document); part NNN`; a key part missing from the response counts with an
empty response; response parts absent from the key are ignored (as the reference scorer does).
`--json` prints one object: {"muc": [R, P, F1], "bcub": ..., "ceafm": ..., "ceafe": ..., "blanc":
..., "lea": ..., "conll_f1": F} with fractions in [0, 1].
"""

import argparse
import json
import sys

from kdx.coref.conll import Part, read_parts
from kdx.coref.scorer import METRICS, score_documents
from kdx.errors import KdxError

NAMES = {"muc": "MUC", "bcub": "B³", "ceafm": "CEAF-m", "ceafe": "CEAF-e", "blanc": "BLANC", "lea": "LEA"}


def score_parts(key: list[Part], response: list[Part]) -> dict:
    by_key = {part.key: part for part in response}
    return score_documents((part.cluster_list(), by_key[part.key].cluster_list() if part.key in by_key else [])
                           for part in key)


def score_files(key_path: str, response_path: str) -> dict:
    key = read_parts([key_path])
    if not key:
        raise KdxError(f"{key_path} holds no `#begin document` part", "give a CoNLL-2012 key file")
    return score_parts(key, read_parts([response_path]))


def table(scores: dict) -> str:
    lines = [f"{'metric':8s} {'recall':>8s} {'precision':>10s} {'F1':>8s}"]
    for name in METRICS:
        recall, precision, f1 = scores[name]
        lines.append(f"{NAMES[name]:8s} {100 * recall:8.2f} {100 * precision:10.2f} {100 * f1:8.2f}")
    lines.append(f"CoNLL F1 (mean of MUC, B³, CEAF-e F1): {100 * scores['conll_f1']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdx.coref.score", description=__doc__.splitlines()[0])
    parser.add_argument("key", help="key (gold) *_conll file")
    parser.add_argument("response", help="response (system) *_conll file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        scores = score_files(args.key, args.response)
    except KdxError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(scores) if args.json else table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())

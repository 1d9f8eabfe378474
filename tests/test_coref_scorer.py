"""The coreference scorer (kdx/coref/scorer.py, kdx/coref/score.py) against hand-worked examples
and against `scorch`, an independent implementation, on random key/response pairs."""

import json
import random
import statistics
import subprocess
import sys
from fractions import Fraction as Fr
from pathlib import Path

import pytest

from kdx.coref.conll import parse_conll, render_part
from kdx.coref.score import main
from kdx.coref.scorer import score_documents

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2012" / "cctv_0000.sample.v4_gold_conll"
KEY = [["a", "b", "c"], ["d", "e", "f", "g"]]
RESPONSE = [["a", "b"], ["c", "d"], ["f", "g", "h", "i"]]


def f1(r, p):
    return 2 * p * r / (p + r) if p + r else 0


def close(got, want):
    assert got == pytest.approx([float(x) for x in want], abs=1e-12)


def test_hand_worked_example():
    """Key {a,b,c} {d,e,f,g}; response {a,b} {c,d} {f,g,h,i}: e is missed, h and i are not in the key.
    Every count below is worked out by hand from the metric's definition."""
    s = score_documents([(KEY, RESPONSE)])
    # MUC: recall (3−2)+(4−3) over (2+3) links ({e} alone); precision (2−1)+(2−2)+(4−3) over 1+1+3.
    close(s["muc"], [Fr(2, 5), Fr(2, 5), Fr(2, 5)])
    # B³: recall (2²+1²)/3 + (1²+2²)/4 over 7 key mentions; precision 2²/2 + (1+1)/2 + 2²/4 over 8.
    r, p = (Fr(5, 3) + Fr(5, 4)) / 7, Fr(4, 8)
    close(s["bcub"], [r, p, f1(r, p)])
    # CEAF-m: best alignment {a,b,c}→{a,b}, {d,e,f,g}→{f,g,h,i}: 2 + 2 shared mentions.
    close(s["ceafm"], [Fr(4, 7), Fr(4, 8), f1(Fr(4, 7), Fr(4, 8))])
    # CEAF-e: same alignment, φ4 = 2·2/(3+2) + 2·2/(4+4) = 1.3, over 2 key / 3 response entities.
    r, p = Fr(13, 10) / 2, Fr(13, 10) / 3
    close(s["ceafe"], [r, p, f1(r, p)])
    # LEA: recall 3·(1/3) + 4·(1/6) over 7; precision 2·1 + 2·0 + 4·(1/6) over 8.
    r, p = (1 + Fr(4, 6)) / 7, (2 + Fr(4, 6)) / 8
    close(s["lea"], [r, p, f1(r, p)])
    # BLANC: coreference links key 9, response 8, correct 2 (ab, fg); non-coreference links key
    # C(7,2)−9 = 12, response C(8,2)−8 = 20, correct 8 (the K1×K2 pairs except c–d).
    rc, pc, rn, pn = Fr(2, 9), Fr(2, 8), Fr(8, 12), Fr(8, 20)
    close(s["blanc"], [(rc + rn) / 2, (pc + pn) / 2, (f1(rc, pc) + f1(rn, pn)) / 2])
    assert s["conll_f1"] == pytest.approx(float((Fr(2, 5) + f1(*(Fr(35, 84), Fr(1, 2))) + f1(Fr(13, 20), Fr(13, 30))) / 3))


def test_a_perfect_response_scores_one_and_singleton_only_keys_follow_the_reference():
    perfect = score_documents([(KEY + [["x"]], KEY + [["x"]])])
    assert all(perfect[m] == pytest.approx([1, 1, 1]) for m in ("muc", "bcub", "ceafm", "ceafe", "blanc", "lea"))
    singletons = score_documents([([["a"], ["b"]], [["a"], ["b"]])])
    assert singletons["muc"] == [0, 0, 0]                    # no links: MUC is 0, as in the reference scorer
    assert singletons["bcub"] == singletons["ceafe"] == singletons["lea"] == [1, 1, 1]
    assert singletons["blanc"] == [1, 1, 1]                  # non-coreference links only
    one = score_documents([([["a"]], [["a"]])])
    assert one["blanc"] == [0, 0, 0]                         # the key has no link of either kind


def test_repeated_response_mentions_and_empty_clusters_are_dropped():
    messy = [["a", "b"], [], ["a", "c"], ["c"]]
    assert score_documents([(KEY, messy)]) == score_documents([(KEY, [["a", "b"], ["c"]])])


def test_counts_are_summed_over_documents_before_dividing():
    both = score_documents([(KEY, RESPONSE), ([["x", "y"]], [["x", "y"]])])
    # MUC: (2 + 1) / (5 + 1) recall, (2 + 1) / (5 + 1) precision — not the mean of 0.4 and 1.
    assert both["muc"][:2] == pytest.approx([0.5, 0.5])
    # CEAF-e: (1.3 + 1) over 3 key and 4 response entities.
    assert both["ceafe"][:2] == pytest.approx([2.3 / 3, 2.3 / 4])


def random_clustering(rng: random.Random, mentions: list[int]) -> list[set[int]]:
    clusters: list[set[int]] = []
    for mention in mentions:
        if clusters and rng.random() < 0.6:
            rng.choice(clusters).add(mention)
        else:
            clusters.append({mention})
    return clusters


@pytest.mark.parametrize("seed", range(40))
def test_equal_to_scorch_on_random_pairs(seed):
    scores = pytest.importorskip("scorch.scores")
    rng = random.Random(seed)
    universe = list(range(rng.randint(3, 25)))
    key = random_clustering(rng, rng.sample(universe, rng.randint(2, len(universe))))
    response = random_clustering(rng, rng.sample(universe, rng.randint(1, len(universe))))
    ours = score_documents([([sorted(c) for c in key], [sorted(c) for c in response])])
    metrics = {"muc": scores.muc, "bcub": scores.b_cubed, "ceafm": scores.ceaf_m, "ceafe": scores.ceaf_e,
               # scorch's fast BLANC uses numpy's removed `np.bool`; its exact version is the same metric
               "blanc": lambda k, r: scores.blanc(k, r, fast=False)}
    for name, metric in metrics.items():
        try:
            theirs = list(metric(key, response))
        except statistics.StatisticsError:
            # scorch's F1 (statistics.harmonic_mean) fails on two numpy zeros: recall = precision = 0
            theirs = [0.0, 0.0, 0.0]
        assert ours[name] == pytest.approx(theirs, abs=1e-9), name


def conll_text(clusters: dict[int, list[tuple[int, int]]], words: int = 8, doc: str = "d") -> str:
    base = f"#begin document ({doc}); part 000\n" + "".join(
        f"{doc} 0 {i} w{i} - - - - - - * -\n" for i in range(words)) + "\n#end document\n"
    return render_part(parse_conll(base).parts[0], clusters)


def test_the_command_line_prints_the_json_contract_and_a_table(tmp_path, capsys):
    key, response = tmp_path / "key.conll", tmp_path / "response.conll"
    key.write_text(conll_text({1: [(0, 1), (3, 3)], 2: [(5, 7), (4, 4)]}))
    response.write_text(conll_text({4: [(0, 1), (3, 3), (4, 4)], 5: [(6, 6), (5, 7)]}))
    assert main([str(key), str(response), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"muc", "bcub", "ceafm", "ceafe", "blanc", "lea", "conll_f1"}
    assert all(len(scores[m]) == 3 and all(0 <= v <= 1 for v in scores[m]) for m in scores if m != "conll_f1")
    expected = score_documents([([[(0, 1), (3, 3)], [(4, 4), (5, 7)]], [[(0, 1), (3, 3), (4, 4)], [(5, 7), (6, 6)]])])
    assert all(scores[name] == pytest.approx(expected[name]) for name in expected)
    assert main([str(key), str(response)]) == 0
    table = capsys.readouterr().out
    assert "CEAF-e" in table and "CoNLL F1" in table


def test_the_command_line_reports_malformed_files(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("#begin document (d); part 000\nd 0 0 w (1\n#end document\n")
    assert main([str(bad), str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


@pytest.mark.skipif(not SAMPLE.exists(), reason="the CoNLL-2012 sample is absent")
def test_python_m_scores_the_sample_against_itself_perfectly():
    run = subprocess.run([sys.executable, "-m", "kdx.coref.score", str(SAMPLE), str(SAMPLE), "--json"],
                         capture_output=True, text=True, check=True)
    scores = json.loads(run.stdout)
    assert scores["bcub"] == scores["ceafe"] == scores["lea"] == [1, 1, 1]
    assert scores["muc"] == [1, 1, 1]   # summed over parts (part 001 alone has no link to find)

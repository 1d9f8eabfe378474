"""`python -m kdx.bench.echoatt`: the speed of EchoAtt students against their teacher, measured
side by side in one process on the SmolLM2-135M architecture (30 layers, hidden 576, 9 query /
3 key-value heads, vocabulary 49,152; random weights: speed does not depend on their values).

For the teacher and a student at each sharing ratio (default 23 %, 41 %, 77 %): prefill tokens/s
(one forward pass over batch × seq_len, no cache), generation tokens/s (greedy, KV cache,
`new_tokens` after a `seq_len` prompt), one training step (forward, backward, AdamW) and its peak
memory. Every model runs in the same rounds, interleaved, and the median of the rounds is kept,
so the machine's load falls on all of them alike; the table gives each student's ratios to the
teacher. Peak memory of a training step: CUDA's allocator peak on a GPU; on a CPU (whose
allocator keeps no such count) the bytes of the weights, gradients, AdamW moments and every
activation saved for the backward pass, counted from the tensors themselves.

The teacher runs with eager attention, like the students (whose source layers must return their
probabilities); `--sdpa-teacher` adds the teacher with PyTorch's fused attention as a reference.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdx.models.attention_similarity import ratio_plan
from kdx.models.echoatt import share_attention

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def architecture(layers: int | None = None, hidden: int | None = None) -> dict:
    arch = dict(SMOLLM2)
    if layers:
        arch["num_hidden_layers"] = layers
    if hidden:   # a smaller model of the same shape (tests): 9/3 heads of hidden/9 dimensions
        arch.update(hidden_size=hidden, intermediate_size=hidden * 8 // 3, vocab_size=min(arch["vocab_size"], 4096))
    return arch


def default_plan(count: int, ratio: float) -> list[int]:
    """Without an analysis: the inner layers ranked from the middle of the stack outwards (only
    the number of shared layers changes the speed, not which)."""
    middle = (count - 1) / 2
    scores = torch.tensor([-abs(i - middle) for i in range(count)], dtype=torch.float64)
    return ratio_plan(scores, ratio)


def plans(count: int, ratios: list[float], similarity_file: str | None) -> dict[str, list[int]]:
    scores = None
    if similarity_file:
        scores = torch.tensor(json.loads(Path(similarity_file).read_text())["per_layer_score"], dtype=torch.float64)
    return {f"{round(100 * r)}%": (ratio_plan(scores, r) if scores is not None else default_plan(count, r))
            for r in ratios}


def build(arch: dict, shared: list[int] | None, attention: str = "eager", seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**arch, attn_implementation=attention))
    if shared is not None:
        share_attention(model, shared)
    return model


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronise(device)
    start = time.perf_counter()
    fn()
    synchronise(device)
    return time.perf_counter() - start


def measure(model, inputs: torch.Tensor, new_tokens: int, device: torch.device) -> dict:
    """One round: prefill tokens/s, generation tokens/s, training-step seconds."""
    batch, length = inputs.shape
    model.eval()
    with torch.no_grad():
        prefill = timed(lambda: model(input_ids=inputs, use_cache=False), device)
        generate = timed(lambda: model.generate(inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                do_sample=False, pad_token_id=0), device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train_step():
        loss = model(input_ids=inputs, labels=inputs, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = timed(train_step, device)
    return {"prefill_tok_s": batch * length / prefill, "generate_tok_s": batch * new_tokens / generate,
            "train_step_s": step}


def training_memory_mb(model, inputs: torch.Tensor) -> float:
    """Memory a training step holds at its peak on any device, counted from the tensors
    themselves: weights, gradients and AdamW's two moments (4 × the parameters) plus every
    activation saved for the backward pass (distinct storages, the weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(input_ids=inputs, labels=inputs, use_cache=False).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return (4 * parameter_bytes + sum(saved.values())) / 2**20


def peak_memory_mb(model, inputs: torch.Tensor, device: torch.device) -> float:
    """The CUDA allocator's peak over one training step on a GPU; elsewhere the count above."""
    if device.type != "cuda":
        return training_memory_mb(model, inputs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    torch.cuda.reset_peak_memory_stats(device)
    model(input_ids=inputs, labels=inputs, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device) / 2**20


def run(args) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = architecture(args.layers, args.hidden)
    count = arch["num_hidden_layers"]
    variants = {"teacher": (None, "eager")}
    if args.sdpa_teacher:
        variants["teacher (sdpa)"] = (None, "sdpa")
    for name, plan in plans(count, args.ratios, args.similarity_file).items():
        variants[f"shared {name}"] = (plan, "eager")
    models = {name: build(arch, plan, attention).to(device) for name, (plan, attention) in variants.items()}
    inputs = torch.randint(0, arch["vocab_size"], (args.batch, args.seq_len),
                           generator=torch.Generator().manual_seed(0)).to(device)
    for model in models.values():           # warm-up (allocator, kernels, first-call overheads)
        measure(model, inputs[:, :8], 2, device)
    rounds: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            rounds[name].append(measure(model, inputs, args.new_tokens, device))
    rows = {}
    for name, (plan, attention) in variants.items():
        row = {key: statistics.median(r[key] for r in rounds[name]) for key in rounds[name][0]}
        row["peak_memory_mb"] = peak_memory_mb(models[name], inputs, device)
        row["params"] = sum(p.numel() for p in models[name].parameters())
        row["shared_layers"] = sorted(plan or [])
        rows[name] = row
    base = rows["teacher"]
    for row in rows.values():
        row["ratios"] = {"prefill": row["prefill_tok_s"] / base["prefill_tok_s"],
                         "generate": row["generate_tok_s"] / base["generate_tok_s"],
                         "train_step": row["train_step_s"] / base["train_step_s"],
                         "peak_memory": row["peak_memory_mb"] / base["peak_memory_mb"],
                         "params": row["params"] / base["params"]}
    return {"device": str(device), "threads": torch.get_num_threads(), "architecture": arch,
            "batch": args.batch, "seq_len": args.seq_len, "new_tokens": args.new_tokens, "repeats": args.repeats,
            "torch": torch.__version__, "results": rows}


def table(report: dict) -> str:
    lines = [f"EchoAtt speed on {report['device']} ({report['threads']} threads), batch {report['batch']}, "
             f"sequence {report['seq_len']}, {report['new_tokens']} generated tokens, median of {report['repeats']}",
             "", "| model | shared layers | params | prefill tok/s | generation tok/s | train step s | peak MB |",
             "|---|---|---|---|---|---|---|"]
    for name, row in report["results"].items():
        r = row["ratios"]
        lines.append(f"| {name} | {len(row['shared_layers'])} | {row['params'] / 1e6:.1f} M ({r['params']:.3f}) | "
                     f"{row['prefill_tok_s']:.0f} ({r['prefill']:.2f}×) | {row['generate_tok_s']:.1f} "
                     f"({r['generate']:.2f}×) | {row['train_step_s']:.3f} ({r['train_step']:.2f}×) | "
                     f"{row['peak_memory_mb']:.0f} ({r['peak_memory']:.2f}×) |")
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m kdx.bench.echoatt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.23, 0.41, 0.77])
    parser.add_argument("--similarity-file", help="a `python -m kdx.analyze attention` JSON: plans from its scores")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than SmolLM2's 30")
    parser.add_argument("--hidden", type=int, default=None, help="a narrower model (multiple of 9)")
    parser.add_argument("--sdpa-teacher", action="store_true", help="also time the teacher with fused attention")
    parser.add_argument("--output", default=None, help="write the report as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    report = run(args)
    print(table(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

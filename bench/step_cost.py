"""Cost of selfaug over sft on the default model: step time and peak memory, side by side.

    .venv/bin/python bench/step_cost.py [--steps 8] [--batch-size 4] [--model smollm2_135m]

Step time: both methods train the same LoRA model on the same real RAG batches (squad_open + BM25
top-3), interleaved step by step in one process so machine noise hits both alike.
Peak memory: each method runs in a fresh subprocess; the peak RSS is reset after loading (Linux
clear_refs), so we report the peak while training and its growth over the loaded model.
Evaluation throughput: greedy ODQA answers per second on the same prompts.
"""

from __future__ import annotations

import ragforget.env

ragforget.env.apply_defaults()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from ragforget.conf_resolvers import register_resolvers  # noqa: E402

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset_peak_rss() (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so loading's peak does not mask training's."""
    Path("/proc/self/clear_refs").write_text("5")


def setup(model_name: str, batch_size: int, n_batches: int):  # noqa: ANN201
    """Config, LoRA model, tokenizer and real training batches."""
    from ragforget.data.encoding import collate_for_training
    from ragforget.data.rag_examples import encode_for_training
    from ragforget.models.loading import load_tokenizer
    from ragforget.pipeline import Job
    from ragforget.training.train import build_trainable_model

    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model_name}", "eval.retention.tasks=[]",
                                                       f"train.max_examples={batch_size * n_batches}"])
    job = Job(cfg, Path("/tmp"))
    job.prepare()
    tokenizer = load_tokenizer(job.assets.model_path)
    examples = job.train_examples(tokenizer)
    encoded = [encode_for_training(ex, tokenizer, cfg.model.chat_template) for ex in examples]
    batches = [collate_for_training(encoded[i:i + batch_size], tokenizer.pad_token_id, cfg.train.max_length)
               for i in range(0, len(encoded), batch_size)]
    torch.manual_seed(0)
    model = build_trainable_model(cfg, job.assets.model_path)
    return cfg, job, model, tokenizer, examples, batches


def make_module(cfg, model, method_name: str):  # noqa: ANN001, ANN201
    from ragforget.training.module import RagFineTuner

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        mcfg = compose(config_name="config", overrides=[f"method={method_name}"])
    module = RagFineTuner(model, hydra.utils.instantiate(mcfg.method.impl), lr=1e-4)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    return module


def train_step(module, optimizer, batch) -> float:  # noqa: ANN001
    start = time.perf_counter()
    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def memory_child(method: str, model_name: str, batch_size: int, steps: int) -> None:
    """Runs in a subprocess: peak RSS of ``steps`` training steps of one method."""
    cfg, _, model, _, _, batches = setup(model_name, batch_size, steps)
    module = make_module(cfg, model, method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loaded = current_rss_mb()
    reset_peak_rss()
    for batch in batches[:steps]:
        train_step(module, optimizer, batch)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": loaded}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-questions", type=int, default=48)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.model, args.batch_size, args.steps)
        return

    methods = ["sft", "selfaug"]
    cfg, job, model, tokenizer, examples, batches = setup(args.model, args.batch_size, args.steps + 2)
    tokens = statistics.fmean(int(b["attention_mask"].sum()) / b["input_ids"].shape[0] for b in batches)
    modules = {m: make_module(cfg, model, m) for m in methods}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for i, batch in enumerate(batches):
        for method in methods:  # interleaved: the same batch, back to back
            seconds = train_step(modules[method], optimizer, batch)
            if i >= 2:  # the first two rounds warm up allocator and kernels
                times[method].append(seconds)

    memory = {}
    for method in methods:
        out = subprocess.run([sys.executable, __file__, "--memory-child", method, "--model", args.model,
                              "--batch-size", str(args.batch_size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        memory[method] = json.loads(out.stdout.strip().splitlines()[-1])

    from ragforget.evaluation.odqa import evaluate_odqa

    eval_examples, _ = job.eval_examples(tokenizer)
    eval_examples = eval_examples[: args.eval_questions]
    model.eval()
    start = time.perf_counter()
    evaluate_odqa(model, tokenizer, eval_examples, cfg.model.chat_template, cfg.eval.odqa.batch_size,
                  cfg.eval.odqa.max_new_tokens)
    eval_seconds = time.perf_counter() - start

    sft_t, aug_t = statistics.median(times["sft"]), statistics.median(times["selfaug"])
    sft_m, aug_m = memory["sft"], memory["selfaug"]
    print(f"model {args.model}, batch {args.batch_size} x ~{tokens:.0f} tokens, {len(times['sft'])} timed steps, "
          f"torch threads {torch.get_num_threads()}")
    print("| method | step time (median s) | peak RSS (MB) | growth over loaded model (MB) |")
    print("|---|---:|---:|---:|")
    for name, t, m in (("sft", sft_t, sft_m), ("selfaug", aug_t, aug_m)):
        print(f"| {name} | {t:.2f} | {m['peak_rss_mb']:.0f} | {m['peak_rss_mb'] - m['loaded_rss_mb']:.0f} |")
    print(f"selfaug / sft: step time {aug_t / sft_t:.2f}x, peak memory {aug_m['peak_rss_mb'] / sft_m['peak_rss_mb']:.2f}x")
    print(f"ODQA evaluation: {len(eval_examples)} questions in {eval_seconds:.1f} s "
          f"({len(eval_examples) / eval_seconds:.2f} questions/s, batch {cfg.eval.odqa.batch_size})")


if __name__ == "__main__":
    main()

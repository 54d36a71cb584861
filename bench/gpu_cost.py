"""Training-step and generation cost at real model sizes, with random weights (no Hub, no downloads).

    python bench/gpu_cost.py --device cuda --shape 1.5b --batch 2x4096        # one H100/H200
    python bench/gpu_cost.py --device cuda --shape 7b --batch 4x2048
    python bench/gpu_cost.py --device cpu --shape 135m --batch 4x2048 --steps 2
    python bench/gpu_cost.py --device cpu --shape tiny                      # seconds; runs in the tests

Shapes are the model configs ``conf/model/random_*.yaml`` (and tiny_random): the architecture and
the real vocabulary, weights created at random directly on the device in the model's dtype. Each
method (``--methods``, from ``conf/method/``) trains with the project's own step
(``RagFineTuner.training_step``, backward, optimizer step) on RAG-shaped, right-padded batches
whose last 16 real tokens of each row are the answer; with ``--checkpointing both`` it runs with and
without activation checkpointing. The settings of trainer=gpu (bf16-mixed, loss chunk rows) apply
on cuda, those of trainer=cpu on cpu.

Every case runs in a fresh subprocess, so its peak memory is its own: torch.cuda.max_memory_allocated
on cuda (weights included), the process's peak RSS on cpu (with glibc's mmap threshold fixed, so
freed blocks leave the RSS; the page faults this costs made a CPU step ~1.7x slower here, 124 s against
72 s for sft at 4 x 2048, so on a CPU read the memory columns and the ratios). A case killed by a
signal (the OOM killer, as a rule) is reported as killed. Step time is the median after warm-up
steps; tokens/s counts real (attended) tokens; TFLOP/s uses 4N FLOPs per token for LoRA (forward,
and backward through the activations only) and 6N for full fine-tuning, N = parameters, not counting
the reference pass or recomputation. Generation: greedy answers of 24 tokens to 300-token prompts
through evaluation's ``generate_batch``, in questions per second.

Needs only what the training step needs: torch, transformers, peft, lightning, omegaconf and hydra-core
(to compose the configs as run.py does); no MLflow, lm-eval, datasets or faiss, so it runs on a bare
GPU machine with those few wheels carried over.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a bare machine runs it from a checkout, uninstalled

SHAPES = {"tiny": "tiny_random", "135m": "random_135m", "0.5b": "random_0_5b", "1.5b": "random_1_5b",
          "7b": "random_7b"}
ANSWER_TOKENS = 16


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ragforget.conf_resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def random_model(cfg: Any, device: str) -> torch.nn.Module:
    """The config's architecture with random weights, created on ``device`` in the model's dtype."""
    from transformers import AutoModelForCausalLM

    from ragforget.models.loading import resolve_dtype
    from ragforget.utils.instantiate import instantiate

    source = instantiate(cfg.model.source, tokenizer_source=None)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(source.model_config(pad_token_id=0),
                                                dtype=resolve_dtype(cfg.model.dtype))


def rag_batch(batch: int, tokens: int, vocab: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    """Right-padded rows of up to ``tokens`` tokens; each row's last ANSWER_TOKENS real tokens are labelled."""
    g = torch.Generator().manual_seed(seed)
    lengths = tokens - torch.randint(0, max(tokens // 16, 1), (batch,), generator=g)
    ids = torch.randint(0, vocab, (batch, tokens), generator=g)
    positions = torch.arange(tokens)[None]
    attention = (positions < lengths[:, None]).long()
    labels = torch.where((positions >= lengths[:, None] - ANSWER_TOKENS) & attention.bool(), ids, -100)
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": attention, "labels": labels}.items()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def train_case(args: argparse.Namespace) -> dict[str, Any]:
    """One (method, checkpointing) case: step times and peak memory of the project's training step."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from ragforget.methods.base import parameters_to_train
    from ragforget.methods.build import build_method
    from ragforget.training.module import RagFineTuner
    from ragforget.training.train import make_trainable

    cfg = compose(overrides(args, method=args.method, checkpointing=args.checkpointing == "on"))
    model = make_trainable(random_model(cfg, args.device), cfg)
    method = build_method(cfg.method)
    module = RagFineTuner(model, method, lr=cfg.train.lr, loss_chunk_rows=cfg.train.loss_chunk_rows).to(args.device)
    module.log = lambda *a, **k: None  # type: ignore[method-assign]  # no Trainer attached
    optimizer = method.optimizer(parameters_to_train(model), lr=cfg.train.lr, weight_decay=0.0)
    precision = (MixedPrecision("bf16-mixed", "cuda" if args.device.startswith("cuda") else "cpu")
                 if cfg.trainer.precision == "bf16-mixed" else None)
    batch_size, tokens = args.batch
    times, real_tokens = [], 0
    for i in range(args.warmup + args.steps):
        batch = rag_batch(batch_size, tokens, model.config.vocab_size, args.device, seed=i)
        synchronize(args.device)
        start = time.perf_counter()
        with precision.forward_context() if precision else nullcontext():
            loss = module.training_step(batch, i)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            real_tokens += int(batch["attention_mask"].sum())
    step = statistics.median(times)
    params = model.num_parameters()
    flops_per_token = (4 if cfg.model.get("lora") else 6) * params
    tokens_per_s = real_tokens / args.steps / step
    return {"step_s": step, "tokens_per_s": tokens_per_s, "tflops": tokens_per_s * flops_per_token / 1e12,
            "peak_gib": peak_memory_gib(args.device), "params": params, "loss": float(loss)}


def generation_case(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy questions/s through models.generation's generate_batch, 300-token prompts, 24 new tokens."""
    from types import SimpleNamespace

    from ragforget.models.generation import generate_batch

    cfg = compose(overrides(args, method="sft", checkpointing=False))
    model = random_model(cfg, args.device).eval()
    tokenizer = SimpleNamespace(eos_token_id=None, pad_token_id=0, batch_decode=lambda ids, **k: [""] * len(ids))
    rates = {}
    for batch in args.generate:
        prompts = [torch.randint(1, model.config.vocab_size, (300,)).tolist() for _ in range(batch)]
        generate_batch(model, tokenizer, prompts[:2], max_new_tokens=2)  # warm-up
        synchronize(args.device)
        start = time.perf_counter()
        generate_batch(model, tokenizer, prompts, max_new_tokens=24)
        synchronize(args.device)
        rates[str(batch)] = batch / (time.perf_counter() - start)
    return {"questions_per_s": rates}


def overrides(args: argparse.Namespace, method: str, checkpointing: bool) -> list[str]:
    trainer = "gpu" if args.device.startswith("cuda") else "cpu"
    return [f"model={SHAPES[args.shape]}", f"method={method}", f"trainer={trainer}",
            f"train.gradient_checkpointing={str(checkpointing).lower()}", f"device={args.device}"]


def run_child(args: argparse.Namespace, **case: str) -> dict[str, Any]:
    """One case in a fresh interpreter (its own peak memory); its JSON result, or the error it died of."""
    cmd = [sys.executable, __file__, "--child", json.dumps(case), "--device", args.device, "--shape", args.shape,
           "--batch", "x".join(map(str, args.batch)), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--generate", ",".join(map(str, args.generate))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not args.device.startswith("cuda"):
        # A fixed mmap threshold gives every block over 128 KiB back to the system when freed, so the
        # peak RSS follows the live tensors instead of glibc's heap fragmentation (1 GB of noise here).
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode < 0:
        return {"error": f"killed by signal {-done.returncode}" + (" (out of memory?)" if done.returncode == -9 else "")}
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        return {"error": (errors[-1] if errors else "no output")[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_batch(text: str) -> tuple[int, int]:
    rows, _, tokens = text.partition("x")
    return int(rows), int(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.5b")
    parser.add_argument("--batch", type=parse_batch, default=None, help="rows x tokens, e.g. 2x4096")
    parser.add_argument("--methods", default="sft,selfaug,output_kl")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--generate", type=lambda s: [int(x) for x in s.split(",") if x], default=[16, 64],
                        help="generation batch sizes (empty: skip)")
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="the accelerator's bf16 peak, for the share column (790: measured on an H200)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch = args.batch or ((2, 64) if args.shape == "tiny" else (2, 4096))
    if args.child:
        case = json.loads(args.child)
        if case["kind"] == "train":
            args.method, args.checkpointing = case["method"], case["checkpointing"]
            print(json.dumps(train_case(args)))
        else:
            print(json.dumps(generation_case(args)))
        return

    on_cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if on_cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                        f"{torch.get_num_threads()} threads)"
    memory = "peak GiB (max_memory_allocated)" if on_cuda else "peak GiB (RSS)"
    lines = [f"{name}, {datetime.date.today()}, torch {torch.__version__}; shape {args.shape} "
             f"({SHAPES[args.shape]}), batch {args.batch[0]} x {args.batch[1]}, median of {args.steps} steps "
             f"after {args.warmup}", "",
             f"| method | checkpointing | step (s) | x sft | tokens/s | TFLOP/s | share of peak | {memory} | x sft |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    modes = ["off", "on"] if args.checkpointing == "both" else [args.checkpointing]
    for mode in modes:
        results = {m: run_child(args, kind="train", method=m, checkpointing=mode) for m in args.methods.split(",")}
        sft = results.get("sft", {})
        for method, r in results.items():
            if "error" in r:
                lines.append(f"| {method} | {mode} | failed: {r['error']} |||||||")
                continue
            ratio = (lambda key: f"{r[key] / sft[key]:.2f}" if key in sft else "–")  # noqa: E731, B023 - used at once
            share = f"{100 * r['tflops'] / args.peak_tflops:.0f}%" if on_cuda else "–"
            lines.append(f"| {method} | {mode} | {r['step_s']:.3f} | {ratio('step_s')} | {r['tokens_per_s']:,.0f} | "
                         f"{r['tflops']:.3g} | {share} | {r['peak_gib']:.2f} | {ratio('peak_gib')} |")
    if args.generate:
        rates = run_child(args, kind="generate")
        lines += ["", "greedy generation, 300-token prompts, 24 new tokens: " + (
            ", ".join(f"{q:.1f} questions/s at batch {b}" for b, q in rates["questions_per_s"].items())
            if "error" not in rates else f"failed: {rates['error']}")]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""SFT and KD of a student on a generated dataset: tokens/s, peak memory and model FLOPs utilisation.

    python bench/gpu_train.py                      # SmolLM2-135M (embedded), bf16 on a GPU
    python bench/gpu_train.py --small              # a tiny random model, a few steps: runs on a CPU

The dataset is generated, not downloaded: question/answer pairs from word lists (throughput does
not depend on what the text says). For KD a `logits` step first stores the teacher's top-k
log-probabilities; the teacher is the student's own starting point (self-distillation), which
costs what a real teacher of that size would. MFU = 6 x parameters x tokens/s / the device's peak
dense bf16 FLOP/s (`--peak-tflops`, default 989 for an H100/H200 SXM); not reported on a CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SUBJECTS = ["a contract", "a statute", "a balance sheet", "an enzyme", "a sorting algorithm", "a vaccine"]
ASKS = ["Explain", "Summarise", "Give an example of", "List the risks of", "Compare two kinds of"]
WORDS = ["the", "model", "student", "teacher", "answer", "clearly", "because", "each", "step", "small"]


def generated_rows(count: int, answer_words: int, seed: int = 0) -> list[dict]:
    pick = random.Random(seed)
    return [
        {
            "prompt": f"{pick.choice(ASKS)} {pick.choice(SUBJECTS)} (case {i}).",
            "response": " ".join(pick.choice(WORDS) for _ in range(answer_words)).capitalize() + ".",
        }
        for i in range(count)
    ]


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the process's max RSS (KiB on Linux)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="tiny random model and few steps (CPU check)")
    parser.add_argument("--student", default="embedded", help="model folder, Hub id or `embedded`")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--answer-words", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--methods", default="sft,kd")
    options = parser.parse_args()

    import torch

    from synthkd.pipeline import run_recipe
    from synthkd.recipe import load_recipe
    from synthkd.teachers.embedded import resolve_model_source
    from synthkd.training.config import TrainConfig
    from synthkd.training.memory import count_parameters
    from synthkd.training.run import train_student

    work = Path(tempfile.mkdtemp(prefix="synthkd-gpu-train-"))
    if options.small:
        from tiny_model import build_tiny_model

        options.student = str(build_tiny_model(work / "tiny"))
        options.rows, options.answer_words, options.steps, options.batch_size = 64, 40, 6, 4
    source = resolve_model_source(options.student)
    parameters = count_parameters(source)[0]
    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_gpu else "CPU"
    print(f"student {options.student}: {parameters / 1e6:.1f}M parameters on {device}")

    seeds = work / "seeds.jsonl"
    seeds.write_text(
        "".join(json.dumps(row) + "\n" for row in generated_rows(options.rows, options.answer_words))
    )
    recipe = work / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "name": "gpu-train-bench",
                "teacher": {"backend": "transformers", "model": options.student, "batch_size": 16},
                "steps": [{"step": "load", "path": str(seeds)}, {"step": "logits", "top_k": options.top_k}],
                "output": {"dir": str(work / "run")},
            }
        )
    )
    clock = time.perf_counter()
    run = run_recipe(load_recipe(recipe))
    print(f"logits step: {len(run.rows)} rows scored in {time.perf_counter() - clock:.1f} s")

    print(f"{'method':<6} {'tokens/s':>10} {'peak GiB':>9} {'MFU':>7} {'loss first->last':>18}")
    for method in options.methods.split(","):
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        config = TrainConfig(
            method=method,
            student=options.student,
            eval_split=0,
            eval_max_rows=2,
            eval_max_new_tokens=4,
            output_dir=str(work / method),
            args={
                "max_steps": options.steps,
                "per_device_train_batch_size": options.batch_size,
                "learning_rate": 2e-5,
                "logging_steps": max(1, options.steps // 10),
            },
        )
        result = train_student(config, run.out_dir / "dataset", work, seed=0, run_name="bench")
        metrics = json.loads((result.output_dir / "eval.json").read_text())
        tokens_per_second = metrics["train_tokens_per_second"] or 0.0
        mfu = 6 * parameters * tokens_per_second / (options.peak_tflops * 1e12) if on_gpu else None
        losses = result.train_losses
        print(
            f"{method:<6} {tokens_per_second:>10.0f} {peak_memory_gib():>9.2f} "
            f"{(f'{mfu:.1%}' if mfu is not None else 'n/a'):>7} {losses[0]:>8.3f} -> {losses[-1]:<8.3f}"
        )


if __name__ == "__main__":
    main()

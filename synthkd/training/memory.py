"""A rough estimate of the memory a training run needs, made before any weight is loaded, so an
impossible configuration fails in a second with a clear message instead of after minutes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
# Activations kept per layer for backward, in bytes per token per hidden unit (16-bit training,
# no recomputation; Korthikanti et al., "Reducing Activation Recomputation", ignoring the
# attention-score term that fused attention kernels avoid).
ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER = 34
# The logits are upcast to float32; the loss keeps them, their log-softmax and their gradient.
LOGIT_COPIES = 3
LORA_TRAINABLE_SHARE = 0.02  # adapters are ~1% of the weights for r=16 on all linear layers
DEFAULT_MAX_LENGTH = 1024  # TRL's SFTConfig default


@dataclass
class MemoryEstimate:
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    teacher: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.teacher

    def describe(self) -> str:
        parts = {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "teacher": self.teacher,
        }
        shown = ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts.items() if size)
        return f"~{self.total / GIB:.2f} GiB ({shown})"


def count_parameters(source: str) -> tuple[int, Any]:
    """Parameters of a model folder or Hub id, counted on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters()), config


def estimate_training_memory(
    source: str,
    *,
    bytes_per_value: int,
    lora: bool,
    batch_size: int,
    max_length: int | None,
    teacher_source: str | None = None,
) -> MemoryEstimate:
    """Weights, gradients and AdamW's two moments (all in the training dtype, as Trainer keeps
    them when the model is loaded in that dtype), activations of one micro-batch, and a live
    teacher's weights for on-policy distillation."""
    parameters, config = count_parameters(source)
    trainable = int(parameters * LORA_TRAINABLE_SHARE) if lora else parameters
    tokens = batch_size * (max_length or DEFAULT_MAX_LENGTH)
    hidden = getattr(config, "hidden_size", 0) or 0
    layers = getattr(config, "num_hidden_layers", 0) or 0
    vocabulary = getattr(config, "vocab_size", 0) or 0
    activations = tokens * hidden * layers * ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER
    activations += tokens * vocabulary * 4 * LOGIT_COPIES
    teacher = count_parameters(teacher_source)[0] * bytes_per_value if teacher_source else 0
    return MemoryEstimate(
        parameters=parameters,
        weights=parameters * bytes_per_value,
        gradients=trainable * bytes_per_value,
        optimizer=2 * trainable * bytes_per_value,
        activations=activations,
        teacher=teacher,
    )


def free_memory(on_gpu: bool) -> tuple[int, str]:
    """Bytes free where training will run, and the device's name."""
    if on_gpu:
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, torch.cuda.get_device_name()
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "the CPU's RAM"
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "the CPU's RAM"

"""Training precision: bfloat16 autocast where the hardware computes it natively.

Why: the default run has a wall-clock budget (45 minutes on a 2-core CPU),
so step time decides how many epochs a host gets. On a CPU with AMX or
AVX512-BF16, oneDNN runs the convolutions in bfloat16, and a training step
of the shipped recipe took 0.68x the float32 time (91.6 against 134.0 ms,
docs/model.md, "Training speed"). Where the hardware lacks it, autocast
would emulate bfloat16 and run slower than float32, so ``auto`` stays at
float32 there.

Only the forward pass is autocast: weights, optimiser state, the weight
average and the losses stay float32 (``ml.training.losses`` upcasts the
logits), and validation and export run in float32, as serving does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Final

import torch

#: Values of ``TrainConfig.precision``: ``auto`` resolves to one of the other two.
PRECISIONS: Final[tuple[str, ...]] = ("auto", "bf16", "fp32")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware.

    CPU: AMX tiles or AVX512-BF16 (``torch.cpu``'s capability probes, private
    but present since torch 2.1; missing probes read as "no").
    """
    if device.type == "cuda":  # pre-Ampere GPUs only emulate it
        return torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``bf16`` or ``fp32``: ``auto`` picks bfloat16 only where it is native."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def forward_autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The context a training forward pass runs in for a resolved ``precision``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

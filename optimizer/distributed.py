"""Where training runs: one process (CUDA when present), or several under `torchrun` with
PyTorch DistributedDataParallel, the standard engine (no launcher of our own):

    torchrun --standalone --nproc_per_node 2 -m optimizer run recipes/llama-pydoc-quick.yaml
    torchrun --nnodes 2 --node_rank 0 --rdzv_endpoint host:29500 -m optimizer run ...

Every rank runs the recipe's control flow, so all of them join each training call (the
baseline, distillation, fine-tuning); rank 0 alone exports, evaluates and writes bundles and
tables. A global batch is split across the ranks and the losses weighted by each part's share,
so the gradient DDP averages is the global batch's: a recipe trains the same model whatever the
process count (up to float summation order). After each training, every replica's weights are
hashed and compared across ranks; a mismatch stops the run.
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import OptimizerError


def pick_device(name: str) -> torch.device:
    """auto: CUDA when available (this rank's GPU under torchrun), else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise OptimizerError(f"train.device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptimizerError("train.device is 'cuda' but PyTorch sees no CUDA device")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env() -> int:
    """Join the process group torchrun describes (WORLD_SIZE > 1); returns the world size."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # Rank 0 evaluates and writes bundles while the others wait at the next collective.
        dist.init_process_group(backend, timeout=timedelta(hours=4))
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def digest(model: torch.nn.Module) -> str:
    """sha256 of the weights (state dict in key order), as stored on the CPU."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def replicas(model: torch.nn.Module) -> dict:
    """Under DDP: check every rank holds the same weights; the record for the manifest."""
    _, world = rank_world()
    if world == 1:
        return {}
    mine = digest(model)
    every: list[str | None] = [None] * world
    dist.all_gather_object(every, mine)
    if len(set(every)) != 1:
        raise OptimizerError(f"DDP replicas diverged after training: weights sha256 per rank "
                             f"{every}")
    return {"world_size": world, "replica_weights_sha256": mine,
            "engine": f"torch.distributed DDP ({dist.get_backend()})"}

"""Language-model training, and knowledge distillation (Hinton et al., 2015).

Data are non-overlapping blocks of `block_size` tokens cut from one token stream (documents
joined by end-of-text), shuffled per epoch with the seed. The loss of a student is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, next token)

with the T^2 factor keeping the soft-target gradients at the scale of the hard ones. alpha = 0
is plain training on the labels, with the same data, steps and initialisation: the control a
distillation result is compared against. The checkpoint kept is the epoch with the lowest
validation cross-entropy.

Under torchrun each global batch is split across the ranks (optimizer/distributed.py): the
model is wrapped in DistributedDataParallel and every rank ends with the same weights, which
is checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..distributed import pick_device, rank_world, replicas
from ..recipe import TrainConfig


@dataclass
class History:
    steps: int = 0
    train_loss: list[float] = field(default_factory=list)  # mean per epoch
    val_loss: list[float] = field(default_factory=list)  # cross-entropy, nats per token
    best_epoch: int = 0
    device: str = "cpu"
    distributed: dict = field(default_factory=dict)  # world size and replica hash under DDP

    def info(self) -> dict:
        return {"steps": self.steps, "best_epoch": self.best_epoch, "device": self.device,
                "best_val_loss": self.val_loss[self.best_epoch] if self.val_loss else None,
                "final_train_loss": self.train_loss[-1] if self.train_loss else None,
                "selected_by": "validation cross-entropy", **self.distributed}


def blocks(stream: list[int], block_size: int) -> torch.Tensor:
    """(n, block_size) int64 of consecutive, non-overlapping tokens (the tail is dropped)."""
    n = len(stream) // block_size
    if n == 0:
        raise ValueError(f"{len(stream)} tokens are fewer than one block of {block_size}")
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, ids: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    hard = lm_loss(student, ids)
    if alpha == 0.0:
        return hard
    s = F.log_softmax(student[:, :-1] / temperature, dim=-1)
    t = F.log_softmax(teacher[:, :-1] / temperature, dim=-1)
    soft = F.kl_div(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), log_target=True,
                    reduction="batchmean") * temperature ** 2
    return alpha * soft + (1.0 - alpha) * hard


@torch.no_grad()
def validation_loss(model: nn.Module, data: torch.Tensor, batch_size: int) -> float:
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        ids = data[i:i + batch_size].to(device)
        logits = model(input_ids=ids).logits
        n = ids[:, 1:].numel()
        total += float(lm_loss(logits, ids)) * n
        count += n
    return total / count


def train_lm(model: nn.Module, train: torch.Tensor, val: torch.Tensor, cfg: TrainConfig,
             seed: int, progress: bool = True, *, epochs: int | None = None,
             teacher: nn.Module | None = None, temperature: float = 2.0, alpha: float = 0.0,
             desc: str = "train") -> tuple[nn.Module, History]:
    """Train `model` in place on (n, block) token blocks; return the best epoch's weights (on
    the CPU, where export and evaluation run)."""
    device = pick_device(cfg.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    torch.manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    epochs = cfg.epochs if epochs is None else epochs
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if teacher is not None:
        teacher.eval()
    rank, world = rank_world()
    net = DistributedDataParallel(model) if world > 1 else model
    hist = History()
    best_state, best = None, math.inf
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False,
               unit="step")
    for epoch in range(epochs):
        model.train()
        running, seen = 0.0, 0
        for idx in torch.randperm(len(train), generator=order_gen).split(cfg.batch_size):
            if len(idx) < world:  # a ragged last batch with fewer sequences than ranks
                continue
            part = idx.tensor_split(world)[rank]  # this rank's share of the global batch
            ids = train[part].to(device)
            logits = net(input_ids=ids).logits
            if teacher is not None and alpha > 0.0:
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids).logits
                loss = distill_loss(logits, t_logits, ids, temperature, alpha)
            else:
                loss = lm_loss(logits, ids)
            opt.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks: with each part's loss weighted by its share,
            # that average is the gradient of the global batch's mean loss
            (loss * (len(part) * world / len(idx)) if world > 1 else loss).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running += loss.item() * len(part)
            seen += len(part)
            hist.steps += 1
            bar.update()
            bar.set_postfix(loss=f"{running / seen:.3f}")
        hist.train_loss.append(running / seen)
        hist.val_loss.append(validation_loss(model, val, cfg.batch_size))
        if hist.val_loss[-1] < best:
            best, hist.best_epoch = hist.val_loss[-1], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    bar.close()
    model.to("cpu")
    if teacher is not None:
        teacher.to("cpu")
    if best_state is not None:
        model.load_state_dict(best_state)
    hist.device = str(device)
    hist.distributed = replicas(model)
    return model.eval(), hist

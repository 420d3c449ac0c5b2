"""Knowledge distillation (Hinton et al., 2015): a smaller student of the same family learns
from the current model's soft targets, and becomes the model.

The student's shape is the recipe's (`student:` with the family's keys, e.g. n_layer, n_embd,
n_head for GPT-2; num_hidden_layers, hidden_size, intermediate_size, num_attention_heads,
num_key_value_heads for the Llama family); what it does not name is the teacher's. It starts
from a random initialisation (seed + 1, the same for every alpha), or with `init_every: k` from
every k-th teacher layer (then the widths must be the teacher's). The loss and the control
(alpha 0: the same student trained on the labels only) are in optimizer/text/train.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..models.dcgan import count_parameters
from ..text.train import train_lm

STAGE = "model"
FAMILIES = ("gpt2", "llama")


@dataclass(frozen=True)
class Config:
    student: dict = field(default_factory=dict)  # the student's shape (family keys)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft-target loss; 0 trains on the labels only (control)
    epochs: int | None = None  # default: the recipe's train.epochs (the teacher's budget)
    init_every: int | None = None  # initialise from teacher layers 0, k, 2k, ...

    def __post_init__(self):
        if not self.student:
            raise ValueError("student must give the student's shape, e.g. {n_layer: 6, ...}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
               for v in self.student.values()):
            raise ValueError(f"student sizes must be positive integers, got {self.student}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {self.alpha}")
        if self.init_every is not None and self.init_every < 1:
            raise ValueError(f"init_every must be >= 1, got {self.init_every}")


def run(subject, cfg: Config, ctx):
    teacher = subject.model
    student = ctx.family.student(teacher, cfg.student, cfg.init_every, ctx)
    desc = "distill" if cfg.alpha > 0 else "student (labels only)"
    student, hist = train_lm(student, ctx.data.train, ctx.data.val, ctx.recipe.train, ctx.seed,
                             ctx.progress, epochs=cfg.epochs, teacher=teacher,
                             temperature=cfg.temperature, alpha=cfg.alpha, desc=desc)
    return replace(subject, model=student, info={
        "teacher_params": count_parameters(teacher), "student_params": count_parameters(student),
        **({"initialised_from": f"teacher layers 0, {cfg.init_every}, ..."}
           if cfg.init_every else {}), **hist.info()})

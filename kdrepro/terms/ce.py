"""Cross-entropy with the hard labels: every run's supervised term."""
from __future__ import annotations

from .. import losses
from .base import LossTerm, StepInputs, TermParams, register_term


@register_term
class CrossEntropy(LossTerm):
    """``weight * CE(z_s, y)``, batch mean (``nn.CrossEntropyLoss()``, as the authors' code)."""

    name = "ce"
    display = "CE"
    Params = TermParams

    def forward(self, step: StepInputs):
        return {"ce": self.params.weight * losses.cross_entropy(step.student_logits.float(), step.targets)}

"""The curriculum anatomy of an SLKD run (notebook 06): what each phase's snapshot scored and selected, and
how its ranking agrees with the teacher's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .runs import RunResult


@dataclass
class CurriculumAnatomy:
    """What an SLKD run's snapshots saw: per curriculum phase the scores of every training image
    (higher = easier), the selected pool, and the snapshot's test accuracy; plus the teacher's scores
    of the same un-augmented images with the same score function (max logit if the run used
    ``teacher_kl``, which would compare the teacher with itself)."""

    result: RunResult
    dataset: Any
    records: list[dict]
    teacher_scores: Any
    teacher_score: str

    def phases(self) -> pd.DataFrame:
        """One row per curriculum phase: epochs, pool fraction and size, snapshot accuracy, score spread."""
        rows = []
        for r in self.records:
            scores = r["scores"].double()
            rows.append({"phase": r["phase"], "epochs": f"{r['start_epoch'] + 1}-{r['end_epoch']}",
                         "fraction": r["fraction"], "pool": len(r["pool"]), "snapshot_top1": r["snapshot_test_top1"],
                         "score_mean": scores.mean().item(), "score_std": scores.std().item()})
        return pd.DataFrame(rows)

    def scores(self) -> pd.DataFrame:
        """Long table of every image's score in every phase (for distribution plots)."""
        frames = [pd.DataFrame({"phase": r["phase"], "score": r["scores"].numpy(), "label": r["targets"].numpy(),
                                "in_pool": _mask(len(r["scores"]), r["pool"])}) for r in self.records]
        return pd.concat(frames, ignore_index=True)

    def overlap(self) -> pd.DataFrame:
        """Consecutive pools: how many of phase k's images phase k+1 keeps, and their Jaccard index."""
        rows = []
        for a, b in zip(self.records, self.records[1:]):
            pa, pb = set(a["pool"].tolist()), set(b["pool"].tolist())
            rows.append({"from_phase": a["phase"], "to_phase": b["phase"], "pool_from": len(pa), "pool_to": len(pb),
                         "kept": len(pa & pb), "kept_fraction": len(pa & pb) / len(pa),
                         "jaccard": len(pa & pb) / len(pa | pb)})
        return pd.DataFrame(rows)

    def teacher_agreement(self) -> pd.DataFrame:
        """Per phase: Spearman correlation of snapshot and teacher scores (all images, and the mean
        within classes), and the share of the snapshot's pool that the teacher's ranking would select
        at the same per-class fraction."""
        import numpy as np
        import torch
        from scipy.stats import spearmanr

        from .sequencer import select_pool

        teacher = torch.as_tensor(self.teacher_scores)
        rows = []
        for r in self.records:
            s, y = r["scores"].numpy(), r["targets"].numpy()
            within = [spearmanr(s[y == c], self.teacher_scores[y == c]).statistic for c in np.unique(y)]
            teacher_pool = select_pool(teacher, r["targets"], r["fraction"], order=r["order"]
                                       if r["order"] != "random" else "easy_first")
            shared = len(set(r["pool"].tolist()) & set(teacher_pool.tolist()))
            rows.append({"phase": r["phase"], "fraction": r["fraction"],
                         "spearman_all": float(spearmanr(s, self.teacher_scores).statistic),
                         "spearman_within_class": float(np.mean(within)),
                         "pool_shared_with_teacher": shared / len(r["pool"])})
        return pd.DataFrame(rows)

    def extremes(self, phase_index: int = 0, per_class: int = 4) -> dict[str, Any]:
        """Indices ``[classes, per_class]`` of the easiest and hardest images of each class in one
        curriculum phase (position ``phase_index`` among the curriculum records), by snapshot score."""
        import torch

        r = self.records[phase_index]
        easiest, hardest = [], []
        for c in range(self.dataset.num_classes):
            members = torch.nonzero(r["targets"] == c).flatten()
            order = members[torch.sort(r["scores"][members], descending=True, stable=True).indices]
            easiest.append(order[:per_class])
            hardest.append(order.flip(0)[:per_class])
        return {"phase": r["phase"], "easiest": torch.stack(easiest), "hardest": torch.stack(hardest)}


def _mask(n: int, pool) -> Any:
    import numpy as np

    mask = np.zeros(n, dtype=bool)
    mask[pool.numpy()] = True
    return mask

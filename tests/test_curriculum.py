"""The public curriculum object (kdrepro.curriculum) and score_instances on ordinary PyTorch inputs."""
from __future__ import annotations

import math
import socket

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from kdrepro.curriculum import Curriculum, CurriculumSampler, DistributedCurriculumSampler
from kdrepro.sequencer import Phase, score_instances


class ScoreNet(nn.Module):
    """Logits ``[s, s - 1, s - 2]`` for an input ``[s]``: the max logit of an instance is its input value."""

    def __init__(self, returns: str = "tensor"):
        super().__init__()
        self.returns = returns
        self.sign = 1.0
        self.offset = nn.Parameter(torch.tensor([0.0, -1.0, -2.0]))

    def forward(self, x):
        z = self.sign * x.reshape(len(x), 1) + self.offset
        if self.returns == "dict":
            return {"features": x, "logits": z}
        if self.returns == "tuple":
            return z, x
        return z


# instance i: (value, label); class 0 = indices 0..3, class 1 = indices 4..7
VALUES = torch.tensor([0.5, 3.0, -1.0, 2.0, 7.0, 1.0, 4.0, 0.0])
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def _data():
    return TensorDataset(VALUES.clone(), LABELS.clone())


@pytest.mark.parametrize("returns", ["tensor", "tuple", "dict"])
def test_score_instances_takes_a_tensor_dataset_and_any_model_output(returns):
    got = score_instances(ScoreNet(returns), _data(), batch_size=3)
    assert torch.equal(got, VALUES)  # the max logit is the input value (hand-worked)


def test_score_instances_takes_an_unshuffled_dataloader_and_refuses_a_shuffled_one():
    got = score_instances(ScoreNet(), DataLoader(_data(), batch_size=5, shuffle=False))
    assert torch.equal(got, VALUES)
    with pytest.raises(ValueError, match="shuffle=False"):
        score_instances(ScoreNet(), DataLoader(_data(), batch_size=5, shuffle=True))


def test_score_instances_says_which_dict_key_it_wants():
    with pytest.raises(ValueError, match="'logits'"):
        score_instances(ScoreNet("dict"), _data(), output_key="logits_missing")
    got = score_instances(ScoreNet("dict"), _data(), score="true_class_prob")
    z = VALUES.double()[:, None] + torch.tensor([0.0, -1.0, -2.0], dtype=torch.float64)
    want = torch.softmax(z, dim=1)[torch.arange(8), LABELS]
    assert torch.allclose(got.double(), want, atol=1e-6)


def test_pools_are_the_easiest_of_every_class_hand_worked():
    # custom pacing: phase 0 (epochs 0-1) half of every class, phase 1 (epochs 2-3) all
    cur = Curriculum(_data(), epochs=4, pacing="custom", pacing_options={"phase_ends": [2, 4], "fractions": [0.5, 1.0]})
    pool = cur.set_epoch(0, ScoreNet())
    # class 0 values 0.5, 3.0, -1.0, 2.0 -> highest two: indices 1, 3; class 1 values 7, 1, 4, 0 -> 4, 6
    assert pool.tolist() == [1, 3, 4, 6]
    assert cur.phase.index == 0 and cur.phase.curriculum
    assert torch.equal(cur.last_scores, VALUES)
    assert cur.set_epoch(1, None).tolist() == [1, 3, 4, 6]  # same phase: no scoring, no model needed
    assert cur.set_epoch(2, ScoreNet()).tolist() == list(range(8))


def test_the_authors_pacing_warms_up_on_everything_first_and_needs_the_model_later():
    cur = Curriculum(_data(), epochs=10)
    assert cur.set_epoch(0).tolist() == list(range(8))  # warm-up: every instance, nothing scored
    with pytest.raises(ValueError, match="needs the model"):
        cur.set_epoch(1)
    # 20 % of 4 per class -> ceil(0.8) = 1: the single easiest of each class
    assert cur.set_epoch(1, ScoreNet()).tolist() == [1, 4]


def test_score_transform_scores_unaugmented_views_of_a_torchvision_style_dataset():
    class Views(Dataset):
        """A torchvision-style data set: ``transform`` applied in ``__getitem__``."""

        def __init__(self, transform):
            self.transform, self.targets = transform, LABELS.tolist()

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return self.transform(VALUES[i]), self.targets[i]

    augmented = Views(lambda v: v + 100.0 * torch.rand(()))  # random noise: a wrong ranking if scored
    cur = Curriculum(augmented, epochs=4, pacing="custom", score_transform=lambda v: v,
                     pacing_options={"phase_ends": [2, 4], "fractions": [0.5, 1.0]})
    assert cur.set_epoch(0, ScoreNet()).tolist() == [1, 3, 4, 6]
    assert augmented.transform is not cur.score_data.transform  # the training set keeps its augmentation


def test_sampler_follows_the_pool_and_a_dataloader_is_built_once():
    cur = Curriculum(_data(), epochs=4, pacing="custom", pacing_options={"phase_ends": [2, 4], "fractions": [0.5, 1.0]})
    loader = DataLoader(_data(), batch_size=3, sampler=cur.sampler(seed=1))
    seen = []
    for epoch in range(4):
        cur.set_epoch(epoch, ScoreNet())
        labels = torch.cat([y for _, y in loader])
        values = torch.cat([x for x, _ in loader])
        seen.append(sorted(values.tolist()))
        assert len(loader.sampler) == len(cur.pool) and len(labels) == len(cur.pool)
    assert seen[0] == seen[1] == sorted(VALUES[[1, 3, 4, 6]].tolist())
    assert seen[2] == seen[3] == sorted(VALUES.tolist())
    # a shuffle per epoch, from seed + epoch
    s = CurriculumSampler(cur, seed=1)
    cur.epoch = 2
    a = list(s)
    cur.epoch = 3
    assert sorted(a) == sorted(list(s)) and (a != list(s) or len(a) < 3)
    assert list(CurriculumSampler(cur, shuffle=False)) == list(range(8))


def test_distributed_shards_are_disjoint_and_cover_the_pool():
    cur = Curriculum(_data(), epochs=4, pacing="custom", pacing_options={"phase_ends": [2, 4], "fractions": [0.5, 1.0]})
    cur.set_epoch(2, ScoreNet())  # 8 instances
    shards = [list(DistributedCurriculumSampler(cur, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded to 9
    flat = sum(shards, [])
    assert set(flat) == set(range(8)) and len(flat) == 9
    dropped = [list(DistributedCurriculumSampler(cur, 3, r, seed=5, drop_last=True)) for r in range(3)]
    assert [len(s) for s in dropped] == [2, 2, 2] and len(set(sum(dropped, []))) == 6


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="either epochs"):
        Curriculum(_data())
    with pytest.raises(ValueError, match="targets has 3 labels"):
        Curriculum(_data(), epochs=10, targets=[0, 1, 0])
    with pytest.raises(ValueError, match="unknown score"):
        Curriculum(_data(), epochs=10, score="hardness")
    with pytest.raises(ValueError, match="phase ends"):
        Curriculum(_data(), epochs=5)  # the authors' pacing needs epochs >= 8
    with pytest.raises(ValueError, match="rank=2"):
        DistributedCurriculumSampler(Curriculum(_data(), epochs=10), num_replicas=2, rank=2)


# --------------------------------------------------------------------------------- two gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: dict):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        net = ScoreNet()
        if rank == 1:  # a replica whose snapshot disagrees (floating-point noise, in the extreme): rank 0's pool wins
            net.sign = -1.0
        cur = Curriculum(_data(), epochs=4, pacing="custom",
                         pacing_options={"phase_ends": [2, 4], "fractions": [0.5, 1.0]})
        sampler = cur.distributed_sampler(seed=3)
        rows = []
        for epoch in range(4):
            cur.set_epoch(epoch, net)
            rows.append((cur.pool.tolist(), list(sampler)))
        out[rank] = rows
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_get_disjoint_shards_of_one_pool():
    import torch.multiprocessing as mp

    world, port = 2, _free_port()
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(world, port, out), nprocs=world, join=True)
    rows0, rows1 = out[0], out[1]
    for epoch, ((pool0, shard0), (pool1, shard1)) in enumerate(zip(rows0, rows1)):
        want = [1, 3, 4, 6] if epoch < 2 else list(range(8))
        assert pool0 == pool1 == want
        assert len(shard0) == len(shard1) == math.ceil(len(want) / world)
        assert not set(shard0) & set(shard1) and sorted(shard0 + shard1) == want

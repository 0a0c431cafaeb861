"""Low-rank and shared-weight layers: dense fallback, init variance, spectral factors, replacing
dense maps, one shared tensor with gradients summed over its uses (also under ZeRO 0-3).

Also runs as a DeepSpeed worker: ``python tests/models/test_lowrank.py --zero-worker OUT``
(the repository root on PYTHONPATH, which tests.helpers.subprocess_env sets)."""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from gnnzero.models import LowRankLinear, build_model, count_parameters
from gnnzero.models.lowrank import (SharedWeightLinear, replace_linears_with_low_rank,
                                     spectral_factors)
from tests.helpers import REPO, run_deepspeed, subprocess_env
from tests.models.common import ARCHS, HEADS, random_graph


def test_low_rank_dense_fallback():
    layer = LowRankLinear(10, 6, rank=6)
    assert layer.dense and layer.U is None and layer.weight.shape == (6, 10)
    assert count_parameters(layer) == 10 * 6 + 6
    x = torch.randn(4, 10)
    torch.testing.assert_close(layer(x), x @ layer.weight.T + layer.bias)
    low = LowRankLinear(10, 6, rank=2)
    assert not low.dense and count_parameters(low) == 2 * (10 + 6) + 6
    torch.testing.assert_close(low(x), x @ low.U @ low.V + low.bias)


def _second_moment_over_inits(make_layer, x: torch.Tensor, inits: int) -> tuple[float, float]:
    """Mean over inits of E_batch,out[y^2], and its standard error."""
    values = []
    with torch.no_grad():
        for _ in range(inits):
            values.append(float(make_layer()(x).pow(2).mean()))
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / math.sqrt(inits)


@pytest.mark.parametrize("init", ["spectral", "input"])
def test_low_rank_init_keeps_dense_output_variance(init):
    """E[y_j^2] = Var(W) * mean ||x||^2 + Var(b) for dense and factorised layers alike.

    Tolerance: 5 standard errors of the mean over 300 independent inits (the
    per-init spread is measured, not assumed), so a false failure has p < 1e-6; a
    wrong init scale (e.g. forgetting the 1/r in Var(V)) is off by a factor r = 8.
    """
    torch.manual_seed(0)
    fan_in, fan_out, rank = 256, 64, 8
    x = torch.randn(512, fan_in)
    theory = (1.0 / (3 * fan_in)) * float(x.pow(2).sum(1).mean()) + 1.0 / (3 * fan_in)
    dense_mean, dense_se = _second_moment_over_inits(lambda: nn.Linear(fan_in, fan_out), x, 300)
    low_mean, low_se = _second_moment_over_inits(
        lambda: LowRankLinear(fan_in, fan_out, rank, init=init), x, 300)
    assert abs(dense_mean - theory) < 5 * dense_se
    assert abs(low_mean - theory) < 5 * low_se
    assert abs(low_mean - dense_mean) < 5 * math.hypot(low_se, dense_se)


def test_spectral_factors_are_balanced_orthogonal_truncated_svd():
    """U^T U = V V^T = diag(S_r) c^2: the factors share the singular values evenly, and
    ||U V||_F equals the dense draw's Frobenius norm (~ sqrt(in * out * Var))."""
    torch.manual_seed(2)
    low = LowRankLinear(300, 200, 12)
    u, v = low.U.detach(), low.V.detach()
    gram_u, gram_v = u.T @ u, v @ v.T
    torch.testing.assert_close(gram_u, torch.diag(torch.diagonal(gram_u)), atol=1e-5, rtol=0)
    torch.testing.assert_close(gram_u, gram_v, atol=1e-5, rtol=1e-4)
    expected = math.sqrt(300 * 200 / (3 * 300))
    assert abs(float((u @ v).norm()) - expected) < 0.02 * expected
    big = spectral_factors(5000, 4000, 8, 1e-3)  # randomised-SVD path (2e7 elements)
    assert big[0].shape == (5000, 8) and big[1].shape == (8, 4000)
    assert abs(float((big[0] @ big[1]).norm()) - math.sqrt(5000 * 4000 * 1e-3)) < 0.5


def test_replacing_glorot_linear_keeps_its_output_variance():
    """GAT/GCN maps use Glorot init (Var = 2/(in+out)); the factorised replacement must too."""
    torch.manual_seed(1)
    fan_in, fan_out, rank = 128, 96, 8
    x = torch.randn(256, fan_in)
    theory = 2.0 / (fan_in + fan_out) * float(x.pow(2).sum(1).mean())

    def replaced():
        holder = nn.Sequential(PyGLinear(fan_in, fan_out, bias=False, weight_initializer="glorot"))
        replace_linears_with_low_rank(holder, rank)
        assert isinstance(holder[0], LowRankLinear)
        return holder

    mean, se = _second_moment_over_inits(replaced, x, 300)
    # Glorot-uniform's own empirical variance differs from 2/(in+out) by ~1%/init; 5 SE bound.
    assert abs(mean - theory) < 5 * se + 0.01 * theory


def test_replacement_copies_bias_and_keeps_dense_when_rank_too_large():
    holder = nn.Sequential(nn.Linear(30, 20), nn.Linear(20, 3))
    bias = holder[0].bias.detach().clone()
    replace_linears_with_low_rank(holder, 4)
    assert isinstance(holder[0], LowRankLinear) and torch.equal(holder[0].bias, bias)
    assert isinstance(holder[1], nn.Linear)  # rank 4 >= min(20, 3)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rank", [None, 3])
def test_shared_cores_are_one_tensor_with_gradients_summed_over_uses(arch, rank):
    kwargs = dict(share_weights=False, rank=rank, dropout=0.0, heads=HEADS if arch == "gat" else 1)
    torch.manual_seed(0)
    reference = build_model(arch, 12, 8, 3, 5, **kwargs)
    torch.manual_seed(0)
    shared = build_model(arch, 12, 8, 3, 5, **{**kwargs, "share_weights": True})
    hidden = [1, 2, 3]
    # The reference is the unshared model with hidden layers 2 and 3 set to layer 1's weights.
    core_paths = [name for name, m in shared.convs[1].named_modules()
                  if isinstance(m, SharedWeightLinear)]
    assert core_paths and len(shared.shared_cores) == len(core_paths)
    with torch.no_grad():
        for path in core_paths:
            source = reference.convs[1].get_submodule(path)
            for i in hidden[1:]:
                target = reference.convs[i].get_submodule(path)
                for name in ("weight", "U", "V"):
                    if getattr(source, name, None) is not None:
                        getattr(target, name).copy_(getattr(source, name))
    for path in core_paths:
        cores = {id(shared.convs[i].get_submodule(path).core) for i in hidden}
        assert len(cores) == 1
    # one tensor: every core parameter appears once in parameters()
    ptrs = [p.data_ptr() for p in shared.parameters()]
    assert len(ptrs) == len(set(ptrs))

    x = torch.randn(30, 12)
    edge_index, edge_weight = random_graph()
    out_ref = reference(x, edge_index, edge_weight)
    out_shared = shared(x, edge_index, edge_weight)
    torch.testing.assert_close(out_shared, out_ref)
    target = torch.randn_like(out_ref)
    ((out_ref - target) ** 2).sum().backward()
    ((out_shared - target) ** 2).sum().backward()
    for path in core_paths:
        core = shared.convs[1].get_submodule(path).core
        for name, param in core.named_parameters():
            summed = sum(getattr(reference.convs[i].get_submodule(path), name).grad
                         for i in hidden)
            torch.testing.assert_close(param.grad, summed)
        for i in hidden:  # biases stay per layer, each with its own gradient
            bias = shared.convs[i].get_submodule(path).bias
            if bias is not None:
                torch.testing.assert_close(bias.grad,
                                           reference.convs[i].get_submodule(path).bias.grad)


def test_shared_model_survives_deepcopy_with_sharing_intact():
    model = build_model("sage", 12, 8, 3, 4, share_weights=True, rank=3)
    clone = copy.deepcopy(model)
    assert clone.convs[1].lin_l.core is clone.convs[2].lin_l.core
    assert clone.convs[1].lin_l.core is clone.shared_cores["lin_l"]
    assert count_parameters(clone) == count_parameters(model)


ZERO_WORKER_NODES = 40


def _zero_worker(out_path: str) -> None:
    """A shared + low-rank model, 3 clipped AdamW steps per ZeRO stage, each rank's loss over
    its own share of the nodes; rank 0 writes the largest difference from plain PyTorch
    (AdamW + clip_grad_norm_ on the full loss) and ZeRO-3's partition sizes."""
    import json

    import deepspeed
    import torch.nn.functional as F

    from gnnzero.engine.runtime import init_distributed

    rank, world, _ = init_distributed(-1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ZERO_WORKER_NODES, 12, generator=gen)
    y = torch.randint(0, 3, (ZERO_WORKER_NODES,), generator=gen)
    edge_index, edge_weight = random_graph(ZERO_WORKER_NODES, 160)
    mine = torch.arange(ZERO_WORKER_NODES) % world == rank
    report = {}
    for stage in (0, 1, 2, 3):
        torch.manual_seed(0)
        model = build_model("sage", 12, 8, 3, 4, rank=3, share_weights=True, dropout=0.0)
        reference = copy.deepcopy(model)
        ref_opt = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.0)
        # clipping on (DeepSpeed's default is 1.0): the norm must count shared tensors once
        config = {"train_micro_batch_size_per_gpu": 1, "steps_per_print": 10**9,
                  "gradient_clipping": 1.0,
                  "optimizer": {"type": "AdamW", "params": {"lr": 0.05, "weight_decay": 0.0,
                                                            "torch_adam": True}},
                  "zero_optimization": {"stage": stage}}
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                          config=config)
        for _ in range(3):
            # DeepSpeed averages gradients over ranks: world * (own sum / N) averages to the mean
            out = engine(x, edge_index, edge_weight)
            loss = F.cross_entropy(out[mine], y[mine], reduction="sum") * world / ZERO_WORKER_NODES
            engine.backward(loss)
            engine.step()
            ref_opt.zero_grad()
            F.cross_entropy(reference(x, edge_index, edge_weight), y).backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            ref_opt.step()
        params = list(engine.module.named_parameters())
        with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=stage == 3):
            diff = max(float((p.detach() - dict(reference.named_parameters())[name]).abs().max())
                       for name, p in params)
        entry = {"max_abs_diff": diff, "num_params": count_parameters(reference)}
        if stage == 3:
            entry["partitioned_numel"] = sum(int(p.ds_numel) for _, p in params)
            entry["shared_core_param_names"] = [n for n, _ in params if n.startswith("shared")]
        report[stage] = entry
    if rank == 0:
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle)


@pytest.mark.e2e
def test_shared_low_rank_model_matches_plain_pytorch_under_zero_0_to_3(tmp_path):
    """One process by default (the launcher alone costs ~40 s on the shared CPUs); set
    GNNZERO_ZERO_TEST_RANKS=2 to run the same check on 2 ranks through ``deepspeed``."""
    import json
    import os
    import subprocess

    out = tmp_path / "zero.json"
    ranks = int(os.environ.get("GNNZERO_ZERO_TEST_RANKS", "1"))
    script = str(Path(__file__).resolve())
    if ranks == 1:
        env = subprocess_env(MASTER_PORT=str(29900 + os.getpid() % 90))
        proc = subprocess.run([sys.executable, script, "--zero-worker", str(out)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)
    else:
        proc = run_deepspeed(script, ["--zero-worker", str(out)], num_procs=ranks, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for stage in ("0", "1", "2", "3"):
        assert report[stage]["max_abs_diff"] < 1e-5, (stage, report[stage])
    # ZeRO-3 holds each shared tensor once: its full sizes add up to the distinct-parameter count
    assert report["3"]["partitioned_numel"] == report["3"]["num_params"]
    assert report["3"]["shared_core_param_names"]


if __name__ == "__main__":
    _zero_worker(sys.argv[sys.argv.index("--zero-worker") + 1])

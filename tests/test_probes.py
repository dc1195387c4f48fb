"""The sigmoid-input percentile probe (Ioffe & Szegedy 2015, Fig. 1b/c) against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normexp import models, tasks
from normexp.data import DATASETS, synthetic
from normexp.probes import build


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_percentiles_match_numpy_on_the_hand_computed_unit_input(compose, norm: str) -> None:
    cfg = compose("experiment=ioffe2015-fig1", f"norm={norm}")
    torch.manual_seed(0)
    model = models.from_config(cfg, (1, 28, 28), 10)
    splits = synthetic(DATASETS["fashion_mnist"], 64, 200, seed=1)
    with torch.no_grad():  # move BN's running estimates away from their initial (0, 1)
        model.train()(splits.train_x)
    model.eval()
    (probe,) = build(
        {"input_percentiles": {"module": "hidden.2.norm", "unit": 3, "samples": 150}},
        model,
        splits,
        tasks.CLASSIFICATION,
    )

    h = splits.test_x[:150].flatten(1).double()
    for i, layer in enumerate(model.hidden):
        w = layer.linear.weight.double()
        z = h @ w.T + (layer.linear.bias.double() if layer.linear.bias is not None else 0)
        if norm == "bn":  # eval mode: running estimates and the affine parameters
            bn = layer.norm
            z = (z - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
            z = z * bn.weight.double() + bn.bias.double()
        if i == 2:
            unit_input = z[:, 3].detach().numpy()
        h = torch.sigmoid(z)
    measured = probe.on_eval(model, step=0)
    expected = np.percentile(unit_input, [15, 50, 85])
    assert list(measured) == ["probe/p15", "probe/p50", "probe/p85"]
    np.testing.assert_allclose(list(measured.values()), expected, rtol=1e-5, atol=1e-5)


def test_unknown_module_is_a_clear_error(compose) -> None:
    cfg = compose("experiment=ioffe2015-fig1")
    model = models.from_config(cfg, (1, 28, 28), 10)
    splits = synthetic(DATASETS["fashion_mnist"], 8, 8, seed=0)
    with pytest.raises(Exception, match=r"no module 'hidden.9.norm'.*hidden.2.norm"):
        build({"input_percentiles": {"module": "hidden.9.norm"}}, model, splits, tasks.CLASSIFICATION)

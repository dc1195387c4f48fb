"""Xiong et al. (2020) claims: criteria on synthetic results (pass and fail), the gradient-norm probe against a
hand computation, figures with diverged cells, and both experiments at smoke scale and composed at paper scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from normexp import claims, plotting, reproduce, tasks
from normexp.claims import Results
from normexp.config import compose_config, expand_grid
from normexp.data.splits import Splits
from normexp.models.transformer import TransformerLM, TransformerSeq2Seq
from normexp.norms import NormSpec
from normexp.probes.gradients import GradientNorms

LRS, WARMUPS, SEEDS, STEPS, PLATEAU = (1e-3, 3e-3, 1e-2), (0, 50, 200), range(3), 400, 3.3
INITIAL = 5.5
STUCK = (3.32, 30)  # (asymptote, time constant): a run that learns token frequencies only
DIVERGED = None

# (position, lr, warm-up) -> (asymptote, time constant) of the test-loss curve, or DIVERGED. The paper's picture:
# Post-LN fails without warm-up from lr 3e-3 on, a long warm-up rescues it at 3e-3 (not at 1e-2), Pre-LN always
# trains and gets there faster.
PAPER_LIKE = {
    **{("pre", lr, w): (2.45, 40) for lr in LRS for w in WARMUPS},
    ("post", 1e-3, 0): (2.55, 80),
    ("post", 1e-3, 50): (2.55, 90),
    ("post", 1e-3, 200): (2.56, 120),
    ("post", 3e-3, 0): STUCK,
    ("post", 3e-3, 50): (2.9, 150),
    ("post", 3e-3, 200): (2.50, 120),
    ("post", 1e-2, 0): DIVERGED,
    ("post", 1e-2, 50): STUCK,
    ("post", 1e-2, 200): STUCK,
}


def warmup_results(cells: dict) -> Results:
    """Three seeds per cell; test loss every 50 steps; a diverged run stops at step 100 without a final loss."""
    rows, summary = [], []
    for (position, lr, warmup), shape in cells.items():
        for seed in SEEDS:
            run = f"{position}-{lr}-{warmup}-{seed}"
            last = 100 if shape is DIVERGED else STEPS
            asymptote, tau = shape or (INITIAL, 1)
            for step in range(0, last + 1, 50):
                loss = asymptote + (INITIAL - asymptote) * math.exp(-step / tau) + 0.001 * seed
                rows.append((run, position, lr, warmup, seed, step, "test/loss", loss))
            summary.append(
                {
                    "run_id": run,
                    "model.position": position,
                    "optim.lr": lr,
                    "schedule.warmup_steps": warmup,
                    "status": "diverged" if shape is DIVERGED else "completed",
                    "final/test/loss": math.nan if shape is DIVERGED else rows[-1][-1],
                    "final/probe/unigram_loss": PLATEAU,
                }
            )
    columns = ["run_id", "model.position", "optim.lr", "schedule.warmup_steps", "seed", "step", "metric", "value"]
    return Results(pd.DataFrame(rows, columns=columns), pd.DataFrame(summary))


def checks(claim_id: str, results: Results) -> dict[str, bool]:
    verdict = claims.get(claim_id).verify(results, "test")
    assert verdict.verdict != "insufficient data", verdict.note
    return {check.name: check.passed for check in verdict.checks}


def test_warmup_claim_reproduced_on_the_papers_picture() -> None:
    verdict = claims.get("xiong2020-warmup").verify(warmup_results(PAPER_LIKE), "test")
    assert verdict.verdict == "reproduced", verdict.checks
    assert len(verdict.checks) == 5
    assert "critical lr 0.003" in verdict.checks[0].measured


def failing_checks(results: Results) -> list[str]:
    """The names of the checks that fail; every margin agrees in sign with its check's outcome."""
    verdict = claims.get("xiong2020-warmup").verify(results, "test")
    for check in verdict.checks:
        assert check.margin is None or (check.margin >= 0 if check.passed else check.margin <= 0), check
    return [check.name for check in verdict.checks if not check.passed]


def final_loss(shape: tuple[float, float]) -> float:
    """The median seed's (seed 1's) final loss of a cell of :func:`warmup_results`, capped at the plateau."""
    asymptote, tau = shape
    return min(asymptote + (INITIAL - asymptote) * math.exp(-STEPS / tau) + 0.001, PLATEAU)


def test_warmup_margins_are_each_criterions_slack_in_nats() -> None:
    margins = {
        c.name[:20]: c.margin for c in claims.get("xiong2020-warmup").verify(warmup_results(PAPER_LIKE), "t").checks
    }

    def worsening(lr: float) -> float:
        longest = final_loss(PAPER_LIKE[("post", lr, 200)])
        return np.mean([final_loss(PAPER_LIKE[("post", lr, w)]) - longest for w in (0, 50)])

    assert margins["4b: more steeply at "] == pytest.approx(worsening(3e-3) - worsening(1e-3))
    assert margins["4a: Pre-LN never fai"] == pytest.approx(PLATEAU - final_loss((2.45, 40)))
    post = [final_loss(PAPER_LIKE[("post", 3e-3, w)]) for w in WARMUPS]
    assert margins["4b: Post-LN's loss w"] == pytest.approx(min(post[0] - post[1], post[1] - post[2]))


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        # Post-LN trains without warm-up everywhere: no failure to rescue, and warm-up does not matter.
        (
            {("post", lr, 0): (2.5, 80) for lr in LRS} | {("post", 3e-3, 50): (2.5, 90)},
            {"4a: some lr_max fails Post-LN", "4b: Post-LN's loss worsens as"},
        ),
        # Pre-LN fails at the largest lr.
        ({("pre", 1e-2, 0): STUCK}, {"4a: Pre-LN never fails on the"}),
        # Warm-up rescues Post-LN, but to a loss 25% above Pre-LN's.
        ({("post", 3e-3, 50): STUCK, ("post", 3e-3, 200): (3.05, 120)}, {"4a: some lr_max fails Post-LN"}),
        # Pre-LN is slower than Post-LN with warm-up.
        ({("pre", lr, 0): (2.45, 110) for lr in LRS}, {"4c: Pre-LN reaches Post-LN-wi"}),
        # The smaller lr suffers more from short warm-ups than the larger one.
        (
            {("post", 1e-3, 0): STUCK, ("post", 1e-3, 50): STUCK, ("post", 3e-3, 50): (2.52, 120)},
            {"4b: more steeply at the larger"},
        ),
    ],
)
def test_warmup_claim_fails_the_criterion_that_the_results_break(change: dict, failing: set[str]) -> None:
    names = failing_checks(warmup_results(PAPER_LIKE | change))
    assert len(names) == len(failing) and all(any(n.startswith(prefix) for n in names) for prefix in failing), names


def test_warmup_criteria_keep_their_names_whichever_lrs_post_ln_trains_at() -> None:
    """A sensitivity map has one row per criterion, so no name may carry the lrs the grid finds trainable."""

    def names(cells: dict) -> list[str]:
        return [c.name for c in claims.get("xiong2020-warmup").verify(warmup_results(cells), "t").checks]

    trains_at_all = PAPER_LIKE | {("post", 1e-2, 200): (2.5, 120)}
    trains_at_one = PAPER_LIKE | {("post", lr, 200): STUCK for lr in LRS[1:]}
    assert names(trains_at_all) == names(PAPER_LIKE) == names(trains_at_one)
    assert len(names(PAPER_LIKE)) == 5


def test_warmup_claim_without_the_plateau_or_a_cell_is_insufficient_data() -> None:
    results = warmup_results(PAPER_LIKE)
    no_plateau = Results(results.runs, results.summary.drop(columns=["final/probe/unigram_loss"]))
    assert claims.get("xiong2020-warmup").verify(no_plateau, "test").verdict == "insufficient data"
    partial = {cell: shape for cell, shape in PAPER_LIKE.items() if cell != ("pre", 3e-3, 0)}
    assert claims.get("xiong2020-warmup").verify(warmup_results(partial), "test").verdict == "insufficient data"


def gradnorm_results(last_norm, per_layer) -> Results:
    """Ten seeds per (position, depth); ``last_norm(position, depth)`` and ``per_layer(position, layer, depth)``."""
    rng = np.random.default_rng(0)
    rows = []
    for position in ("post", "pre"):
        for depth in (6, 8, 10, 12, 14):
            for seed in range(10):
                run = f"{position}-{depth}-{seed}"
                for layer in range(depth):
                    noise = 1 + 0.02 * rng.standard_normal()
                    norm = last_norm(position, depth) if layer == depth - 1 else per_layer(position, layer, depth)
                    rows.append((run, position, depth, seed, 0, f"grad/norm/{layer}", norm * noise))
                    rows.append(
                        (
                            run,
                            position,
                            depth,
                            seed,
                            0,
                            f"grad/expected_norm/{layer}",
                            per_layer(position, layer, depth) * noise,
                        )
                    )
    columns = ["run_id", "model.position", "model.depth", "seed", "step", "metric", "value"]
    runs = pd.DataFrame(rows, columns=columns)
    return Results(runs, runs[["run_id"]].drop_duplicates())


def paper_last(position: str, depth: int) -> float:
    return 1.6 if position == "post" else 1.6 * math.sqrt(6 / depth)


def paper_per_layer(position: str, layer: int, depth: int) -> float:
    return 0.2 * (1 + layer) if position == "post" else 0.5 - 0.01 * layer


def test_gradnorm_claim_reproduced_on_the_papers_picture() -> None:
    verdict = claims.get("xiong2020-gradnorm").verify(gradnorm_results(paper_last, paper_per_layer), "test")
    assert verdict.verdict == "reproduced", verdict.checks


def test_gradnorm_claim_fails_when_post_ln_grows_with_depth_and_falls_per_layer() -> None:
    def last(position: str, depth: int) -> float:
        return 0.2 * depth if position == "post" else paper_last(position, depth)

    def per_layer(position: str, layer: int, depth: int) -> float:
        return 1 / (1 + layer) if position == "post" else 0.2 * (1 + layer)

    result = checks("xiong2020-gradnorm", gradnorm_results(last, per_layer))
    assert [name for name, ok in result.items() if not ok] == [
        "4d: Post-LN's last-FFN gradient norm varies < 20% across depths",
        "4d: Post-LN's per-layer gradient norms rise with the layer index (ρ > 0 at every depth)",
        "4d: Pre-LN's per-layer gradient norms are flat (CV < 20%) or falling (ρ ≤ 0) at every depth",
    ]
    verdict = claims.get("xiong2020-gradnorm").verify(gradnorm_results(last, per_layer), "test")
    margins = [check.margin for check in verdict.checks]
    # Post-LN's last norm 0.2·depth over depths 6..14: CV = std/mean of (6, 8, 10, 12, 14), noise ±2% aside
    depths = np.array([6, 8, 10, 12, 14])
    assert margins[0] == pytest.approx(0.20 - depths.std() / depths.mean(), abs=0.01)
    assert margins[1] == pytest.approx(1.0)  # Pre-LN's last norm falls monotonically: ρ = −1
    assert margins[2] == pytest.approx(-1.0)  # Post-LN's per-layer norms fall: ρ = −1 at every depth
    # Pre-LN's per-layer norms rise 0.2·(1 + layer): ρ = +1, so the slack is 0.20 − CV where it is largest (14)
    layers = np.arange(1, 15)
    assert margins[3] == pytest.approx(0.20 - layers.std() / layers.mean(), abs=0.01)
    assert all(m < 0 for m, c in zip(margins, verdict.checks, strict=True) if not c.passed)


def test_figures_are_drawn_with_diverged_cells(tmp_path: Path) -> None:
    for claim_id, results in (
        ("xiong2020-warmup", warmup_results(PAPER_LIKE)),
        ("xiong2020-gradnorm", gradnorm_results(paper_last, paper_per_layer)),
    ):
        paths = reproduce.draw(claims.get(claim_id), results, tmp_path / claim_id, "test")
        assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert {p.name for p in (tmp_path / "xiong2020-warmup").iterdir()} == {
        "loss_curves.png", "loss_curves.pdf", "final_loss_heatmap.png", "final_loss_heatmap.pdf", "final_loss.md",
        "loss_curves.caption.md", "final_loss_heatmap.caption.md",
    }  # fmt: skip
    table = (tmp_path / "xiong2020-warmup" / "final_loss.md").read_text()  # 2.55 + 2.95·e^-5 + 0.001·seed
    assert "| Post-LN | 0 | 2.571 [2.570–2.572] | 3.321 [3.320–3.322] | (3 diverged) |" in table


def test_heatmap_shows_an_all_diverged_cell_black_and_labelled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    drawn = {}

    def keep(fig, directory: Path, name: str, *caption: object) -> list[Path]:
        drawn[name] = fig
        return []

    monkeypatch.setattr(plotting, "save", keep)
    reproduce.draw(claims.get("xiong2020-warmup"), warmup_results(PAPER_LIKE), tmp_path, "test")
    post, pre = drawn["final_loss_heatmap"].axes[:2]
    # rows: warm-up 200, 50, 0; columns: lr 1e-3, 3e-3, 1e-2. Only Post-LN at lr 1e-2 without warm-up diverged.
    assert post.get_title().startswith("Post-LN") and pre.get_title().startswith("Pre-LN")
    assert np.argwhere(np.ma.getmaskarray(post.images[0].get_array())).tolist() == [[2, 2]]
    labels = {tuple(np.round(text.get_position()).astype(int)): text.get_text() for text in post.texts}
    assert labels[(2, 2)] == "diverged" and sum(text == "diverged" for text in labels.values()) == 1
    assert not np.ma.getmaskarray(pre.images[0].get_array()).any()
    assert all(text.get_text() != "diverged" for text in pre.texts)


def test_gradient_probe_matches_per_batch_backward_and_leaves_the_run_untouched() -> None:
    torch.manual_seed(0)
    cfg = OmegaConf.create({"position": "post", "final_norm": False, "depth": 3, "width": 16, "heads": 2, "ffn": 32,
                            "dropout": 0.1, "tie_embeddings": False})  # fmt: skip
    model = TransformerLM(cfg, NormSpec.parse("ln"), 20, 8)
    tokens = torch.randint(20, (40, 9))
    splits = Splits(tokens[:, :-1], tokens[:, 1:], tokens[:4, :-1], tokens[:4, 1:], 20)
    probe = GradientNorms(model, splits, batches=3, batch_size=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    measured = probe.on_eval(model.train(), step=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())

    model.eval()  # the reference: plain backward on each batch, no dropout
    weights = [model.layers[i].linear2.weight for i in range(3)]
    grads = []
    for indices in probe.batches:
        model.zero_grad()
        logits = model(splits.train_x[indices])
        torch.nn.functional.cross_entropy(logits.reshape(-1, 20), splits.train_y[indices].reshape(-1)).backward()
        grads.append([w.grad.clone() for w in weights])
    for layer in range(3):
        per_batch = [g[layer] for g in grads]
        expected_norm = sum(torch.linalg.matrix_norm(g) for g in per_batch) / 3
        assert measured[f"grad/norm/{layer}"] == pytest.approx(expected_norm.item(), rel=1e-5)
        mean = sum(per_batch) / 3
        assert measured[f"grad/expected_norm/{layer}"] == pytest.approx(torch.linalg.matrix_norm(mean).item(), rel=1e-5)
    assert probe.on_eval(model, step=1) == {}


def test_gradient_probe_indexes_encoder_then_decoder_layers() -> None:
    cfg = OmegaConf.create({"position": "pre", "final_norm": True, "depth": 2, "width": 8, "heads": 2, "ffn": 16,
                            "dropout": 0.0, "tie_embeddings": True})  # fmt: skip
    model = TransformerSeq2Seq(cfg, NormSpec.parse("ln"), 12, 6)
    splits = Splits(torch.zeros(4, 2, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long), None, None, 12)
    names = GradientNorms(model, splits).names
    assert names == [f"{stack}.{i}.linear2.weight" for stack in ("encoder", "decoder") for i in range(2)]


@pytest.mark.parametrize("experiment", ["xiong2020-warmup", "xiong2020-gradnorm"])
def test_experiment_runs_at_smoke_scale(cli, out_dir: Path, experiment: str) -> None:
    status, _, _ = cli("run", f"experiment={experiment}", "scale=smoke", f"out_dir={out_dir}", "model=transformer_pre")
    assert status == 0
    (run,) = (out_dir / experiment / "smoke").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    wanted = "probe/unigram_loss" if experiment == "xiong2020-warmup" else "grad/expected_norm/0"
    assert wanted in summary["final"]


def test_paper_scale_composes_the_papers_setup() -> None:
    jobs = expand_grid(["experiment=xiong2020-warmup", "scale=paper"])
    assert len(jobs) == 2 * 2 * 3 * 3  # position × lr_max {5e-4, 1e-3} × warm-up {0, 500, 4000} × seed
    cfg = compose_config(jobs[0])
    model = cfg.model
    assert (model.name, model.depth, model.width, model.ffn, model.heads, model.dropout) == (
        "transformer_seq2seq", 6, 512, 1024, 4, 0.1
    )  # fmt: skip
    assert list(cfg.optim.betas) == [0.9, 0.98] and cfg.data.name == "iwslt14"
    assert {job[1] for job in jobs} == {"optim.lr=0.0005", "optim.lr=0.001"}
    assert {job[2] for job in jobs} == {
        "schedule.warmup_steps=0",
        "schedule.warmup_steps=500",
        "schedule.warmup_steps=4000",
    }


@pytest.mark.parametrize("experiment", ["xiong2020-warmup", "xiong2020-gradnorm"])
def test_paper_scale_trains_translation_with_label_smoothing(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}", "scale=paper"])
    task = tasks.of(cfg.data)  # token-level cross-entropy that skips padding
    assert (cfg.data.name, task.name, task.label_smoothing) == ("iwslt14", "translation", 0.1)

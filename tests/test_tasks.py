"""The tasks' losses and counts against formulas: padding is skipped, label smoothing is Szegedy et al.'s and
applies to the training loss only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normexp import tasks
from normexp.errors import ConfigError
from normexp.training.loop import evaluate

VOCAB = 7


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, V) logits and (N, T) targets whose second sentence is half padding."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, VOCAB, generator=generator)
    target = torch.tensor([[1, 2, 3, 4], [5, 6, tasks.IGNORE, tasks.IGNORE]])
    return logits, target


def nll_per_scored_token(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    log_p = logits.log_softmax(-1)
    rows, columns = target.shape
    return torch.stack(
        [-log_p[n, t, target[n, t]] for n in range(rows) for t in range(columns) if target[n, t] != tasks.IGNORE]
    )


def test_translation_scores_only_the_tokens_that_are_not_padding() -> None:
    logits, target = padded_batch()
    task = tasks.of({"task": "translation"})
    assert int(task.count(target)) == 6
    expected = nll_per_scored_token(logits, target)
    torch.testing.assert_close(task.loss(logits, target), expected.mean())
    torch.testing.assert_close(task.loss(logits, target, reduction="sum"), expected.sum())


def test_evaluation_averages_over_scored_tokens_not_padded_positions() -> None:
    logits, target = padded_batch()
    model = torch.nn.Identity()  # the "inputs" are the logits themselves
    metrics = evaluate(model, logits, target, batch_size=1, task=tasks.of({"task": "translation"}))
    assert metrics["test/loss"] == pytest.approx(nll_per_scored_token(logits, target).mean().item(), rel=1e-6)
    scored = target != tasks.IGNORE
    right = (logits.argmax(-1) == target) & scored
    assert metrics["test/acc"] == pytest.approx(right.sum().item() / scored.sum().item())


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution() -> None:
    logits, target = padded_batch()
    smoothing = 0.1
    task = tasks.of({"task": "translation", "label_smoothing": smoothing})
    log_p = logits.log_softmax(-1)[target != tasks.IGNORE]
    uniform = -log_p.mean(-1)
    expected = (1 - smoothing) * nll_per_scored_token(logits, target) + smoothing * uniform
    torch.testing.assert_close(task.training_loss(logits, target), expected.mean())
    metrics = evaluate(torch.nn.Identity(), logits, target, batch_size=2, task=task)
    assert metrics["test/loss"] == pytest.approx(nll_per_scored_token(logits, target).mean().item(), rel=1e-6)


def test_classification_counts_every_sample() -> None:
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    task = tasks.of({})
    assert task.count(target) == 5
    torch.testing.assert_close(task.loss(logits, target), F.nll_loss(logits.log_softmax(-1), target))


@pytest.mark.parametrize("data", [{"task": "regression", "label_smoothing": 0.1}, {"label_smoothing": 1.5}])
def test_label_smoothing_outside_cross_entropy_or_range_is_refused(data: dict) -> None:
    with pytest.raises(ConfigError, match="label_smoothing"):
        tasks.of(data)

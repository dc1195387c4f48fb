"""The typed config schema, composition of the Hydra config tree, and validation before any work starts.

YAML under ``normexp/configs/`` is the user's surface; the dataclasses here type and document the sections every run
has. Free-form sections (``model``, ``norm``, ``data``, ``probes``) are checked by the registries they select from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normexp.errors import ConfigError
from normexp.identity import ROOT_CONFIG, run_name

CONFIG_DIR = ROOT_CONFIG.parent
"""The Hydra config tree, shipped inside the package (a non-editable install has it too)."""


@dataclass
class TrainConfig:
    """The training loop's knobs."""

    steps: int = 1000  # optimizer steps
    images: int | None = None  # training images per run, where a config derives steps from them (batch-size grids)
    batch_size: int = 60  # samples drawn per forward-backward pass (a micro-batch when accumulate > 1)
    norm_batch: int | None = None  # samples sharing a norm's batch statistics (forward chunk); None: batch_size
    accumulate: int = 1  # micro-batches per optimizer step: the optimizer batch is batch_size × accumulate
    eval_every: int = 250  # steps between evaluations on the test set (and probe measurements)
    log_every: int = 50  # steps between training-metric records (running means over the interval)
    eval_batch_size: int = 1000
    progress: bool = True  # tqdm bar with loss, accuracy and steps/s
    diverge_loss: float = 1.0e4  # a training loss above this (or NaN/inf) ends the run as `diverged`
    target_acc: float | None = None  # summary's steps_to_target: first evaluation with test/acc >= this
    checkpoint_every: int = 1000  # steps between checkpoints, also saved at the end and on SIGTERM/SIGUSR1
    keep_checkpoint: bool = True  # false: delete the checkpoint once the run has ended (completed or diverged)


@dataclass
class OptimConfig:
    """Optimizer: ``sgd`` or ``adam``; options that do not apply to the chosen one are ignored."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1.0e-8
    decoupled_weight_decay: bool = False
    lr_scaling: str = "none"  # none | linear: lr × (batch_size × accumulate) / base_batch
    base_batch: int = 256  # the batch size at which `lr` is given when lr_scaling is linear


@dataclass
class ScheduleConfig:
    """Learning-rate schedule as a multiplier of ``optim.lr`` per step (see ``normexp.optim.SCHEDULES``)."""

    name: str = "constant"
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=list)  # `step`: steps where the lr is multiplied by gamma
    gamma: float = 0.1
    min_factor: float = 0.0  # `cosine`: final lr as a fraction of optim.lr
    decay_start: int | None = None  # `inverse_sqrt`: the step its decay starts from; None: the warm-up's end


@dataclass
class LoggerConfig:
    """Experiment tracker besides the run folder: ``none`` or ``wandb``."""

    name: str = "none"
    project: str = "normexp"
    entity: str | None = None
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled
    init_timeout: float = 30.0  # seconds W&B may take to start online before the run falls back to offline


@dataclass
class NormexpConfig:
    """Root schema; see ``normexp/configs/config.yaml`` for the composition order."""

    experiment_name: str = "adhoc"
    claim: str | None = None
    scale_name: str = "cpu"
    seed: int = 0
    out_dir: str = "runs"
    device: str = "auto"
    launcher_name: str = "basic"  # basic | joblib | slurm | submitit_local (normexp/configs/launcher/)
    gpus: int = 0  # GPUs the launcher spreads runs over (joblib: one worker pinned to each)
    deterministic: bool = False  # torch.use_deterministic_algorithms on GPU (slower); CPU runs are deterministic anyway
    threads: int | None = 1  # torch CPU threads per run; None: torch's default (all cores)
    resume: str = "auto"  # auto: continue an unfinished run from its checkpoint; never: start it again
    fast_path: str = "none"  # GPU fast path: bf16, channels_last, compile, cuda_graphs joined by + (normexp/accel.py)
    fuse: bool = False  # with -m: train each grid cell's seeds and lrs together as one vmapped model (fused.py)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    norm: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)


def workers(gpus: int) -> int:
    """Parallel local workers: one per GPU, or one per CPU core this process may use without GPUs (a SLURM or
    ``taskset`` allocation can be fewer cores than the machine has)."""
    if gpus > 0:
        return gpus
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows lack it
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def div(numerator: Any, denominator: Any) -> int:
    """``${div:a,b}``: integer division in configs (the batch-size grid's steps = images // batch)."""
    return int(numerator) // int(denominator)


def mul(left: Any, right: Any) -> int:
    """``${mul:a,b}``: integer product in configs (the batch-size grid's 75% milestone = images·3 // (batch·4))."""
    return int(left) * int(right)


def register() -> None:
    """Register the schema and the resolvers (``run_name``: :func:`normexp.identity.run_name`, ``workers``,
    ``div``, ``mul``); idempotent."""
    ConfigStore.instance().store(name="normexp_schema", node=NormexpConfig)
    for name, resolver in (("run_name", run_name), ("workers", workers), ("div", div), ("mul", mul)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def compose_config(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose the config for ``overrides`` (one run) outside of a Hydra app, e.g. for tests and validation."""
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            return compose("config", overrides=overrides, return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(
            one_paragraph(error).rstrip(".") + ".", fix="check the override spelling; `normexp list` shows names"
        ) from None
    finally:
        GlobalHydra.instance().clear()


def one_paragraph(error: Exception) -> str:
    """``error``'s message, and its cause's (Hydra's "Error merging override" hides why), on one line, without
    OmegaConf's key and type bookkeeping."""
    text = f"{error}: {error.__cause__}" if error.__cause__ is not None else str(error)
    lines = [line.strip() for line in text.splitlines()]
    bookkeeping = ("full_key", "reference_type", "object_type", "Config search path", "provider=")
    return " ".join(line for line in lines if line and not line.startswith(bookkeeping))


def sweep_grid(loader: ConfigLoader, params: Mapping[str, Any] | None, arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands a config's ``hydra.sweeper.params`` and the command
    line ``arguments`` (which win for a key set in both): ``a=1,2``, ``range()``, ``choice()``, ``glob()`` (which
    needs the config ``loader`` to list a group's options). A sweep it cannot enumerate (``interval()``) raises
    Hydra's error."""
    parser = OverridesParser.create(config_loader=loader)
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parser.parse_overrides(lines), None) for job in batch]


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """All jobs of ``normexp run -m OVERRIDES`` (:func:`sweep_grid` with the composed experiment's params), without
    running anything: for tests and planning tools."""
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            loader = GlobalHydra.instance().config_loader()
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
            plain = [o.input_line for o in parsed if not o.is_sweep_override()]
            cfg = compose("config", overrides=plain, return_hydra_config=True)
            return sweep_grid(loader, cfg.hydra.sweeper.get("params"), overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_paragraph(error).rstrip(".") + ".") from None
    finally:
        GlobalHydra.instance().clear()


def validate(cfg: DictConfig) -> None:
    """Reject impossible values and unknown names before any work starts (raises :class:`ConfigError`)."""
    import torch

    from normexp import accel, data, models, optim, probes, tasks

    _check_group_choices(cfg)
    _check_seed(cfg.seed)
    _check_device(cfg.device, cfg.launcher_name)
    _check_train(cfg.train)
    opt = cfg.optim
    _check_choice("optim.lr_scaling", opt.lr_scaling, ("none", "linear"))
    _check_choice("resume", cfg.resume, ("auto", "never"))
    if not (opt.lr > 0 and math.isfinite(opt.lr)):
        raise ConfigError(f"optim.lr must be a positive number, got {opt.lr}.", fix="set optim.lr=0.1, for example")
    if cfg.schedule.warmup_steps < 0 or cfg.schedule.warmup_steps > cfg.train.steps:
        raise ConfigError(
            f"schedule.warmup_steps={cfg.schedule.warmup_steps} must lie in [0, train.steps={cfg.train.steps}].",
            fix="shorten the warm-up or train longer",
        )
    _check_choice("model", cfg.model.get("name"), models.MODELS)
    _check_choice("data", cfg.data.get("name"), data.DATASETS)
    _check_choice("optim", opt.name, optim.OPTIMIZERS)
    _check_choice("schedule", cfg.schedule.name, optim.SCHEDULES)
    _check_choice("logger", cfg.logger.name, ("none", "wandb"))
    for name in cfg.probes:
        _check_choice("probes", name, probes.PROBES)
    tasks.of(cfg.data)
    _check_data_sizes(cfg)
    fast = accel.FastPath.parse(cfg.fast_path)
    if cfg.device == "cpu":  # "auto" is resolved where the run starts: a SLURM login node has no GPU
        fast.check(torch.device("cpu"))
    if fast.cuda_graphs and cfg.probes:
        raise ConfigError(
            "fast_path cuda_graphs replays one captured batch shape; probes forward other batches.",
            fix="drop cuda_graphs from fast_path, or remove each probe (~probes.<name>)",
        )
    data.check_available(cfg.data)
    _check_model_and_probes(cfg)


SEED_BOUND = 2**32
"""Seeds lie in [0, 2**32): the range NumPy's global seed accepts (Python's and torch's accept it too)."""


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_BOUND:
        raise ConfigError(f"seed={seed} is out of range: seeds lie in [0, 2**32).", fix="set seed=0, 1, 2, ...")


LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local")
"""Launchers that run on this machine, so the device a run asks for must be present here."""


def _check_device(name: str, launcher: str) -> None:
    """A device torch knows, and, when the runs train on this machine, one it has (a SLURM login node needs no GPU:
    ``device=cuda`` is checked on the node)."""
    import torch

    choices = ["auto", "cpu", "cuda", "cuda:N", "mps"]
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}.", choices=choices, fix="set device=auto") from None
    if launcher not in LOCAL_LAUNCHERS or device.type == "cpu":
        return
    present = {
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type, False)
    if not present:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(
            f"device={name} is not present on this machine ({count} CUDA device(s), MPS "
            f"{'available' if torch.backends.mps.is_available() else 'unavailable'}).",
            choices=choices,
            fix="set device=auto (the best device present) or device=cpu, or launch on a machine that has it "
            "(launcher=slurm checks the device on the node)",
        )


def _check_train(train: DictConfig) -> None:
    """The training loop's knobs: positive sizes and intervals, a batch that ``norm_batch`` divides, bounds."""
    for key in ("steps", "batch_size", "accumulate", "eval_every", "log_every", "eval_batch_size"):
        if train[key] <= 0:
            raise ConfigError(f"train.{key} must be a positive integer, got {train[key]}.", fix=f"set train.{key}=N>0")
    if train.norm_batch is not None and not (
        0 < train.norm_batch <= train.batch_size and train.batch_size % train.norm_batch == 0
    ):
        raise ConfigError(
            f"train.norm_batch={train.norm_batch} must divide train.batch_size={train.batch_size}.",
            fix="pick a divisor of the batch size, or null for the whole batch",
        )
    if train.checkpoint_every < 0:
        raise ConfigError(f"train.checkpoint_every must be >= 0, got {train.checkpoint_every}.", fix="0 disables it")
    if not train.diverge_loss > 0:
        raise ConfigError(
            f"train.diverge_loss must be > 0, got {train.diverge_loss}.", fix="set train.diverge_loss=1e4 (the default)"
        )
    if train.target_acc is not None and not 0 < train.target_acc <= 1:
        raise ConfigError(
            f"train.target_acc must lie in (0, 1] or be null, got {train.target_acc}.",
            fix="give an accuracy as a fraction, e.g. train.target_acc=0.9",
        )


def _check_data_sizes(cfg: DictConfig) -> None:
    """``data.train_size`` and ``test_size`` positive or null, and an optimizer batch the training set can fill, as
    far as its size is known without reading data files (:func:`_known_train_size`)."""
    for key in ("train_size", "test_size"):
        size = cfg.data.get(key)
        if size is not None and not (isinstance(size, int) and size > 0):
            problem = f"data.{key} must be a positive integer or null, got {size!r}."
            raise ConfigError(problem, fix=f"set data.{key}=N>0")
    batch, train_size = cfg.train.batch_size * cfg.train.accumulate, _known_train_size(cfg.data)
    if train_size is not None and batch > train_size:
        raise ConfigError(
            f"train.batch_size × train.accumulate = {batch} exceeds the {train_size} training samples.",
            fix="lower train.batch_size or train.accumulate, or raise data.train_size",
        )


def _known_train_size(data_cfg: DictConfig) -> int | None:
    """The training set's size, or a bound on it, where known without reading data files: generated data are
    generated (milliseconds), a real dataset has at most ``data.train_size`` samples; None when unbounded."""
    from normexp import data

    if data_cfg.get("synthetic"):
        return len(data.load(OmegaConf.merge(data_cfg, {"test_size": 1})).train_x)
    return data_cfg.get("train_size")


def _check_group_choices(cfg: DictConfig) -> None:
    """A ``data=X`` given on the command line that a later config file silently undid: the experiment's
    ``at_scale`` file sets ``data.name`` (the group's own files are named after their ``name``). Needs the hydra
    node (``compose_config(..., return_hydra_config=True)``); without it there is nothing to compare."""
    if "hydra" not in cfg:
        return
    given = {override.split("=", 1)[0].lstrip("+~") for override in cfg.hydra.overrides.task}
    choice, name = cfg.hydra.runtime.choices.get("data"), cfg.data.get("name")
    if "data" in given and "data.name" not in given and choice != name:
        source = cfg.hydra.runtime.choices.get("at_scale")
        where = f"normexp/configs/at_scale/{source}.yaml" if source else "a later config file"
        raise ConfigError(
            f"data={choice} is overridden by {where}, which sets data.name={name}: the run would train on {name}.",
            fix=f"set data.name={choice} instead of data={choice}",
        )


@contextmanager
def _options_of(section: str) -> Iterator[None]:
    """Turn a TypeError or ValueError raised while building from ``section`` of the config (an option a constructor
    does not take, or a value it refuses) into a :class:`ConfigError` naming the section."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bad {section} options: {error}.", fix=f"check the options under {section}") from None


def _check_model_and_probes(cfg: DictConfig) -> None:
    """Build the model and its probes once on tiny generated data and forward it: a norm grouping that does not
    divide a layer's channels, a norm option the norm refuses (some, like BN's eps, only in the forward pass), or a
    probe naming a layer the model lacks, fails here rather than an hour into a sweep."""
    import torch

    from normexp import data, models, probes, tasks

    tiny = OmegaConf.merge(cfg.data, {"synthetic": True, "train_size": 2, "test_size": 2})
    splits = data.load(tiny)
    with _options_of("model and norm"), torch.no_grad():
        model = models.from_config(cfg, splits.input_shape, splits.num_classes)
        model(splits.train_x)
    with _options_of("probes"):
        probes.build(cfg.probes, model, splits, tasks.of(cfg.data))


def _check_choice(group: str, name: Any, choices: Any) -> None:
    if name not in choices:
        raise ConfigError(
            f"unknown {group} {name!r}.",
            choices=sorted(choices),
            fix=f"set {group}=<one of the choices> (files in normexp/configs/{group}/)",
        )


register()  # resolvers must exist in every process that resolves a config, launcher workers included

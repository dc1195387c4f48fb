"""Hydra's basic sweeper, planning the whole grid before any run: ``hydra/sweeper=normexp``.

The grid is expanded exactly as Hydra's ``BasicSweeper`` expands it (the experiment's ``hydra.sweeper.params``, then
the command line, which wins for a key set in both; ``glob()``, ``range()``, ``choice()``); then
:func:`normexp.sweep.run_grid` composes and validates every job, skips the finished ones and hands the rest to the
configured launcher, one job per run or, with ``fuse=true``, one per grid cell. Hydra only instantiates plugins that
live under the ``hydra_plugins`` package, hence this module.
"""

from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class NormexpSweeperConf:
    """The sweeper's config: BasicSweeper's (``params``: the grid; ``max_batch_size`` is not used, the whole grid
    is planned and launched at once)."""

    _target_: str = "hydra_plugins.normexp_sweeper.normexp_sweeper.NormexpSweeper"
    max_batch_size: Any = None
    params: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="normexp", node=NormexpSweeperConf, provider="normexp")


class NormexpSweeper(BasicSweeper):
    """BasicSweeper whose grid is planned and validated as a whole by :func:`normexp.sweep.run_grid`."""

    def sweep(self, arguments: list[str]) -> Any:
        """Expand the grid, plan it and launch its pending runs; return the launcher's results."""
        from normexp import sweep  # torch and the registries only when a sweep runs, not when Hydra scans plugins
        from normexp.config import sweep_grid

        loader = self.hydra_context.config_loader
        return sweep.run_grid(
            sweep_grid(loader, self.params, arguments),
            compose=lambda overrides: loader.load_sweep_config(self.config, list(overrides)),
            launch=self.launcher.launch,
        )

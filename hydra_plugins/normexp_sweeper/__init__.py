"""normexp's Hydra sweeper plugin (``hydra/sweeper=normexp``, the default of ``normexp run -m``)."""

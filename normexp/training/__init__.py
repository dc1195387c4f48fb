"""The training wing: how runs are put together and trained, one way for every run.

* :mod:`~normexp.training.batches`: the one source of training batches (resumable sampler, augmentation, layout).
* :mod:`~normexp.training.assemble`: one function that builds a run from its config.
* :mod:`~normexp.training.loop`: the one loop schedule, driving a single run's stepper or a fused cell's.
* :mod:`~normexp.training.fused`: the fused stepper, a grid cell's seeds and lrs as one vmapped model.
* :mod:`~normexp.training.runner`: a run's lifecycle, from config to run folder (start, resume, summary).

Everything here builds on the layers below (data, models, norms, optim, probes, run folders); nothing below imports
it.
"""

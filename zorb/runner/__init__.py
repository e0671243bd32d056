"""The experiment runner around the library: the Hydra job (``zorb.runner.job``), what is
recorded about it in MLflow (``tracking``), the sweep callbacks, the paper experiments, tables
and figures. ``zorb.runner.main(cfg)`` runs one composed config."""


def main(cfg):
    """Run one composed config (``zorb.runner.job.main``)."""
    from zorb.runner import job

    return job.main(cfg)


def cli(cfg):
    """``main`` with the command line's error handling (``zorb.runner.job.cli``)."""
    from zorb.runner import job

    return job.cli(cfg)

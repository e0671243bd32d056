"""zorb's command line: compose a Hydra config from conf/ and run it (zorb.runner.job).

    python run.py                                          # the default example (mnist_5k, conv_dense)
    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3
    python run.py -m dataset=iris,xor seed=0,1,2           # a sweep: one MLflow parent run, a child per job
    python run.py -m experiment=paper_a                    # a paper table (experiments/paper_a.yaml)
    python run.py --cfg job --resolve                      # print the composed config
"""

from zorb.kernels.tuning import tune_process

tune_process()  # first: OpenBLAS reads its kernel choice when numpy loads it (zorb.kernels.cpu)

import sys  # noqa: E402

from zorb.runner import writer  # noqa: E402

# next: a single run's MLflow process imports MLflow and opens the store on another core while
# this one imports JAX and composes the config (zorb/runner/writer.py)
writer.start(sys.argv[1:])

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from zorb.runner import callbacks, experiments, job, lifecycle  # noqa: E402


def quote_network_spec(argv: list[str]) -> list[str]:
    """``network.spec=conv2d[8,3] sigmoid ...`` as one quoted string: Hydra's override grammar
    would read its brackets and commas as a list or a sweep. A value already quoted is kept."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "network.spec" and value and value[0] not in "'\"" and "'" not in value:
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


# experiments/*.yaml become the options of the `experiment` group (zorb/runner/experiments.py)
experiments.register()
# hydra.callbacks may only name zorb's own callbacks: checked before Hydra instantiates any
callbacks.refuse_foreign_callbacks()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    job.cli(cfg)


if __name__ == "__main__":
    sys.argv[1:] = quote_network_spec(sys.argv[1:])
    lifecycle.run_then_exit(main)  # without the interpreter's teardown: 1.4-1.7 s after a run

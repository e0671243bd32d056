"""zorb's command line: compose a Hydra config from conf/ and run it (zorb.runner).

    python run.py                                          # the default example (mnist_5k, conv_dense)
    python run.py dataset=iris network=iris solver.rcond=1e-9 seed=3
    python run.py -m dataset=iris,xor seed=0,1,2           # a sweep: one MLflow parent run, a child per job
    python run.py -m experiment=paper_a                    # a paper table (experiments/paper_a.yaml)
    python run.py --cfg job --resolve                      # print the composed config
"""

import zorb  # noqa: F401  (first: it sets up OpenBLAS before anything loads it; zorb.cpu)

import hydra
from omegaconf import DictConfig

from zorb import experiments, runner

# experiments/*.yaml become the options of the `experiment` group (zorb/experiments.py)
experiments.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    runner.cli(cfg)


if __name__ == "__main__":
    main()

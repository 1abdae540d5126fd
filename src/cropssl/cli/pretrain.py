"""``cropssl-pretrain``: the Hydra app that pre-trains an encoder with any SSL method.

Examples::

    cropssl-pretrain                                  # MAE on the demo shards
    cropssl-pretrain method=mae trainer.max_steps=100 data.train=work/shards/pretrain
    cropssl-pretrain start=resume run_dir=runs/2026-11-25_10-00-00_mae
    cropssl-pretrain trainer=ddp trainer.devices=2          # 2 DDP processes (gloo on CPU), one run dir
    cropssl-pretrain -m hparams_search=simclr_optuna       # Optuna sweep; returns ``objective``

Distributed runs: with ``trainer=ddp`` Lightning starts the other ranks by running this app again. The
launching process hands them its run directory and its overrides (environment variables), so every rank
joins the same run and only rank 0 writes configs, logs, summaries and checkpoints. Under ``srun`` (one
task per device) each task runs the app: pass ``run_dir=`` (the sbatch templates in ``slurm/`` do), else
the tasks agree on ``runs/slurm-<job>.<step>_<name>``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cropssl.config import CONFIG_DIR, precheck_overrides
from cropssl.train.run import check_objective, objective_value, run
from cropssl.train.rundir import created_run_dirs, ddp_job_env, rank_argv

log = logging.getLogger("cropssl.pretrain")


class _NoAdverts(logging.Filter):
    """Drop Lightning's installation tips (the litlogger advert) from the run's console and log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_libraries() -> None:
    """Silence library notices that say nothing about the run (precisely: by message)."""
    import warnings

    # torch 2.14 deprecates LeafSpec; Lightning 2.6 still uses it internally
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoAdverts())


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input (config, data, files): one line, no traceback."""
    from cropssl.checkpointing import CheckpointError
    from cropssl.config import ConfigKeyError
    from cropssl.data.shards import ShardError
    from cropssl.io.atomic import OutputError

    return (ConfigKeyError, CheckpointError, ShardError, OutputError, FileNotFoundError, ValueError, KeyError)


def _fail(exc: BaseException, run_dir: Path | None) -> None:
    """Print the one-line error; remove the run directory this start created if nothing was trained."""
    import shutil

    created = created_run_dirs()
    trained = run_dir is not None and any((run_dir / f).exists() for f in ("checkpoints", "metrics.csv"))
    if run_dir is not None and run_dir.resolve() in created and not trained:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"cropssl-pretrain: error: {exc}", file=sys.stderr)
    print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="pretrain")
def pretrain_app(cfg: DictConfig) -> float | None:
    """The Hydra task: pre-train, then return the objective value (what an Optuna sweep optimises).

    User errors (a config typo, missing shards, a damaged checkpoint, an unwritable output) print one line
    and exit with status 2; a failed start leaves no run directory behind.
    """
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_objective(cfg)
        with ddp_job_env(cfg, run_dir):
            summary = run(cfg)
    except user_errors() as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail(exc, run_dir)
    return objective_value(cfg, summary)


def main(cfg: DictConfig | None = None) -> float | None:
    """Entry point of ``cropssl-pretrain``.

    From the command line (no ``cfg``) it runs the Hydra app, whose task returns the objective value to
    the sweeper (Hydra's own entry point returns ``None``). Given a composed ``cfg``, it runs that config
    and returns the objective value.
    """
    if cfg is not None:
        return pretrain_app(cfg)
    quiet_libraries()
    sys.argv = rank_argv(list(sys.argv))
    if "LOCAL_RANK" not in os.environ and os.environ.get("HYDRA_FULL_ERROR") != "1":
        precheck_overrides(sys.argv, "pretrain", "cropssl-pretrain")
    pretrain_app()
    return None


if __name__ == "__main__":
    main()

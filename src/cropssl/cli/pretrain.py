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
from omegaconf import DictConfig, OmegaConf

from cropssl.config import CONFIG_DIR
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


def precheck_overrides(argv: list[str]) -> None:
    """Compose the config of a single run before Hydra does, to name a mistyped key with a suggestion.

    Hydra's own message for ``trainer.max_step=5`` suggests appending ``+trainer.max_step``; this says
    ``Did you mean 'max_steps'?`` instead and exits with status 2. Multiruns and sweep syntax are left
    to Hydra.
    """
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from cropssl.config import suggest

    if any(a in ("-m", "--multirun") or a.startswith(("--config", "-c")) for a in argv[1:]):
        return
    args = [a for a in argv[1:] if "=" in a and not a.startswith(("-", "hydra"))]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose("pretrain", overrides=args)
    except MissingConfigException as exc:
        print(f"cropssl-pretrain: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        options = re.search(r"Available options in '[^']*':(.*?)(?:Config search path|$)", str(exc), re.S)
        if options:
            print("valid options: " + " ".join(options.group(1).split()), file=sys.stderr)
        sys.exit(2)
    except ConfigCompositionException as exc:
        text = f"{exc} {exc.__cause__ or ''}"
        m = re.search(r"full_key: (\S+)", text) or re.search(r"override '([^']+)'", text)
        if not m:
            print(f"cropssl-pretrain: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            base = compose("pretrain", overrides=[a for a in args if not a.startswith(key + "=")])
        node = OmegaConf.select(base, parent) if parent else base
        valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
        print(
            f"cropssl-pretrain: error: unknown config key {key!r}.{suggest(leaf, valid)} "
            f"Valid keys of {parent or 'the config'}: {sorted(valid)}",
            file=sys.stderr,
        )
        sys.exit(2)


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
        precheck_overrides(sys.argv)
    pretrain_app()
    return None


if __name__ == "__main__":
    main()

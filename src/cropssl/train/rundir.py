"""Run directories and distributed jobs: where a run writes, and how DDP ranks join the launcher's job.

Hydra's ``hydra.run.dir`` resolves ``${cropssl_run_dir:...}`` here: ``runs/<timestamp>_<name>`` created on
the spot (a suffix when another run has it), the launcher's directory for the DDP ranks Lightning starts
(handed over in the environment), or an agreed name under a multi-task ``srun``. :func:`rank_argv` rewrites
a rank's command line so that it joins its job inside a multirun.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Set by the process that launches DDP ranks, for the ranks Lightning starts (they re-run this app):
#: the run directory of the job and its overrides (JSON list).
RUN_DIR_ENV = "CROPSSL_RUN_DIR"


OVERRIDES_ENV = "CROPSSL_TASK_OVERRIDES"


#: Environment variables Lightning's DDP launcher sets in the launching process (removed after the job so
#: the next job of a multirun starts its own processes on a new port).
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


#: Run directories this process has chosen, per (root, name): Hydra may evaluate ``hydra.run.dir`` twice.
_CHOSEN_RUN_DIRS: dict[tuple[str, str], str] = {}


def _in_multitask_srun() -> bool:
    """Inside an ``srun`` step of several tasks (each task runs this app)."""
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def new_run_dir(root: str, name: str) -> str:
    """``<root>/<timestamp>_<name>``, created here; a suffix ``_1``, ``_2``... if another run has it."""
    if os.environ.get("SLURM_JOB_ID") and _in_multitask_srun():  # the tasks must agree without talking
        return f"{root}/slurm-{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}_{name}"
    base = f"{root}/{datetime.now():%Y-%m-%d_%H-%M-%S}_{name}"
    Path(root).mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        candidate = base if i == 0 else f"{base}_{i}"
        try:
            Path(candidate).mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free run directory {base}_<n> in {root}")


def run_dir_resolver(run_dir: Any, root: str, name: str) -> str:
    """``${cropssl_run_dir:run_dir,root,name}``: the given dir, the launcher's (DDP ranks) or a new one."""
    if run_dir not in (None, "", "None", "null"):
        return str(run_dir)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:  # a DDP rank started by the launching process (or that process during its job)
        return inherited
    key = (str(root), str(name))
    if key not in _CHOSEN_RUN_DIRS:
        _CHOSEN_RUN_DIRS[key] = new_run_dir(str(root), str(name))
    return _CHOSEN_RUN_DIRS[key]


OmegaConf.register_new_resolver("cropssl_run_dir", run_dir_resolver, replace=True)


@contextlib.contextmanager
def ddp_job_env(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """Hand this job's run directory and overrides to the DDP ranks Lightning starts; clean up after.

    In the launching process only (not in a rank started by a launcher, which has ``LOCAL_RANK``). On exit
    the variables Lightning's launcher set are restored and the process group is destroyed, so the next
    job of a multirun in the same process starts its own ranks.
    """
    if "LOCAL_RANK" in os.environ:
        yield
        return
    from hydra.core.hydra_config import HydraConfig

    saved = {k: os.environ.get(k) for k in (*_DDP_ENV, RUN_DIR_ENV, OVERRIDES_ENV)}
    os.environ[RUN_DIR_ENV] = str(run_dir)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    os.environ[OVERRIDES_ENV] = json.dumps(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # the job failed: leave the group anyway
            dist.destroy_process_group()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _global_rank_from_env() -> int:
    if os.environ.get("RANK", "").isdigit():  # torchrun
        return int(os.environ["RANK"])
    if _in_multitask_srun() and os.environ.get("SLURM_PROCID", "").isdigit():
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


#: Hydra command-line flags that choose the config (kept when a DDP rank's command line is rewritten).
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _config_flags(argv: list[str]) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            out += [arg, argv[i + 1]]
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS and "=" in arg:
            out.append(arg)
    return out


def rank_argv(argv: list[str]) -> list[str]:
    """The command line of this process: rewritten for a DDP rank so that it joins the launcher's job.

    A rank Lightning started re-runs this app with the launcher's command line, which in a multirun holds
    the whole sweep: it gets the job's own overrides and run directory instead. Ranks other than 0 write no
    ``.hydra`` directory and no log file (rank 0 does).
    """
    run_dir, overrides = os.environ.get(RUN_DIR_ENV), os.environ.get(OVERRIDES_ENV)
    if run_dir and overrides is not None and os.environ.get("LOCAL_RANK", "0") not in ("", "0"):
        return [
            argv[0],
            *_config_flags(argv[1:]),
            *json.loads(overrides),
            f"hydra.run.dir={_quote(run_dir)}",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
        ]
    if _global_rank_from_env() == 0:
        return argv
    extra = []
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append("hydra.output_subdir=null")
    if not any(a.startswith("hydra/job_logging=") for a in argv):
        extra.append("hydra/job_logging=stdout")
    return [*argv, *extra]


def created_run_dirs() -> set[Path]:
    """The run directories this process created (a failed start removes its own)."""
    return {Path(d).resolve() for d in _CHOSEN_RUN_DIRS.values()}

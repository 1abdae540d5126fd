"""Config location and strict validation of composed Hydra configs.

Hydra already rejects command-line overrides of keys that do not exist. This module also rejects keys
that a YAML file adds by mistake: unknown top-level keys, and keys that the ``_target_`` of a node does
not accept, before anything is built, with a message naming the key and the closest valid names.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(os.environ.get("CROPSSL_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs"))

#: Keys allowed at the top of a pre-training config (besides ``hydra``).
PRETRAIN_KEYS = frozenset(
    {
        "data",
        "encoder",
        "method",
        "augment",
        "trainer",
        "logger",
        "callbacks",
        "start",
        "seed",
        "name",
        "run_dir",
        "summary",
        # metric a sweep optimises (returned by the Hydra task; see configs/hparams_search)
        "objective",
    }
)
#: Keys of nodes that are metadata, not constructor arguments.
META_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_", "name"})


class ConfigKeyError(KeyError):
    """A config holds a key nothing accepts (usually a typo)."""

    def __str__(self) -> str:
        return str(self.args[0])


def suggest(key: str, valid: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest valid names (empty when none is close)."""
    close = difflib.get_close_matches(key, list(valid), n=3)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def check_target_keys(node: Any, where: str) -> None:
    """Recursively check that every ``_target_`` node only holds keys its target accepts."""
    if isinstance(node, DictConfig):
        keys = [str(k) for k in node]
        if "_target_" in keys:
            target = _import(str(node["_target_"]))
            fn = target.__init__ if inspect.isclass(target) else target
            params = inspect.signature(fn).parameters
            accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            valid = [p for p in params if p != "self"]
            if not accepts_any:
                for k in keys:
                    if k not in META_KEYS and k not in params:
                        raise ConfigKeyError(
                            f"unknown config key {where}.{k} for {node['_target_']}.{suggest(k, valid)} "
                            f"Valid keys: {sorted(valid)}"
                        )
        for k in node:  # the keys as they are (a legend's keys are ints)
            if not str(k).startswith("_"):
                check_target_keys(node._get_node(k), f"{where}.{k}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_target_keys(item, f"{where}[{i}]")


def check_config(cfg: DictConfig, allowed: frozenset[str] = PRETRAIN_KEYS) -> None:
    """Fail on unknown top-level keys or keys a ``_target_`` does not accept.

    Raises:
        ConfigKeyError: naming the offending key and suggesting valid ones.

    """
    for k in cfg:
        if k not in allowed and k != "hydra":
            raise ConfigKeyError(f"unknown top-level config key {k!r}.{suggest(str(k), allowed)}")
    for k in cfg:
        check_target_keys(cfg._get_node(k), str(k))
    OmegaConf.set_struct(cfg, True)


def precheck_overrides(argv: list[str], config_name: str, prog: str) -> None:
    """Compose the config of a single run before Hydra does, to name a mistyped key with a suggestion.

    Hydra's own message for ``trainer.max_step=5`` suggests appending ``+trainer.max_step``; this says
    ``Did you mean 'max_steps'?`` instead and exits with status 2. Multiruns and sweep syntax are left
    to Hydra.

    Args:
        argv: The command line (``sys.argv``).
        config_name: The primary config (``pretrain``, ``evaluate``).
        prog: The command's name, for the message.

    """
    import re

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    if any(a in ("-m", "--multirun") or a.startswith(("--config", "-c")) for a in argv[1:]):
        return
    args = [a for a in argv[1:] if "=" in a and not a.startswith(("-", "hydra"))]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name, overrides=args)
    except MissingConfigException as exc:
        print(f"{prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        options = re.search(r"Available options in '[^']*':(.*?)(?:Config search path|$)", str(exc), re.S)
        if options:
            print("valid options: " + " ".join(options.group(1).split()), file=sys.stderr)
        sys.exit(2)
    except ConfigCompositionException as exc:
        text = f"{exc} {exc.__cause__ or ''}"
        m = re.search(r"full_key: (\S+)", text) or re.search(r"override '([^']+)'", text)
        if not m:
            print(f"{prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        key = m.group(1)
        from omegaconf.errors import ValidationError

        if isinstance(exc.__cause__, ValidationError):  # the key exists, its value has the wrong type
            print(f"{prog}: error: {key}: {str(exc.__cause__).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        parent, _, leaf = key.rpartition(".")
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            # the unknown key may be a parent of the override's own (``a.windw.p=1``: full_key a.windw)
            kept = [a for a in args if not (a.split("=", 1)[0] + ".").startswith(key + ".")]
            base = compose(config_name, overrides=kept)
        node = OmegaConf.select(base, parent) if parent else base
        valid = [str(k) for k in node] if isinstance(node, DictConfig) else []
        print(
            f"{prog}: error: unknown config key {key!r}.{suggest(leaf, valid)} "
            f"Valid keys of {parent or 'the config'}: {sorted(valid)}",
            file=sys.stderr,
        )
        sys.exit(2)

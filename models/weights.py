"""Load a local state dict file into a module, with errors that say what does not fit.

Nothing here downloads anything: weights are files the user put on disk (``params.model.weights``). Files are read
with ``torch.load(map_location="cpu", weights_only=True)``, so a checkpoint that pickles arbitrary Python objects
(some training frameworks store their config that way) is refused rather than executed; re-save its tensors alone.

Accepted layouts: a plain state dict (``name -> tensor``); a checkpoint dict holding one under ``"state_dict"`` or
``"model"``; either with the ``module.`` prefix that DistributedDataParallel adds. Then, in this order:

1. ``prefix`` selects a sub-tree and strips it (``"backbone."`` takes the backbone out of a whole-model checkpoint);
2. ``rename`` replaces key prefixes (longest first), e.g. ``Backbone.reference_prefixes`` maps torchvision /
   reference names such as ``layer1.`` to this project's ``stem.layer1.``;
3. keys are compared with the module's: a shape mismatch is always an error (it cannot be loaded); missing and
   unexpected keys are errors when ``strict`` and logged otherwise.

Example: torchvision ResNet-50 ImageNet weights into the SimpleBaseline backbone (their ``fc.*`` is unexpected and the
deconvolutions are missing, hence ``strict=False``)::

    net = build_backbone("resnet", 50)
    load_state_dict_file(net, "resnet50.pth", rename=net.reference_prefixes, strict=False)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

MAX_LISTED = 10  # longer key lists are cut to this many names plus a count
_DDP_PREFIX = "module."
_CHECKPOINT_KEYS = ("state_dict", "model")


class WeightsError(ValueError):
    """A weights file is missing, unreadable, not a state dict, or does not fit the module."""


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... (+{len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def read_state_dict(path: str | Path, prefix: str = "", rename: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """Read ``path`` and return ``name -> tensor`` after unwrapping, ``module.`` stripping, ``prefix`` and ``rename``.

    Raises:
        WeightsError: the file is missing or unreadable, holds no state dict, or no key starts with ``prefix``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on the damage
        raise WeightsError(
            f"{path}: cannot be read as a torch file with weights_only=True ({type(e).__name__}: {e}). "
            "If it is a checkpoint with pickled Python objects, re-save its state dict alone."
        ) from e
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: not a state dict (found {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{path}: not a state dict (an empty {type(obj).__name__})")
    bad = next(((k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if bad is not None:
        raise WeightsError(
            f"{path}: not a state dict: expected parameter name -> tensor, found {bad[0]!r} -> "
            f"{type(bad[1]).__name__} (a checkpoint keeps its weights under one of {_CHECKPOINT_KEYS})"
        )
    state: dict[str, Tensor] = dict(obj)
    if all(k.startswith(_DDP_PREFIX) for k in state):
        state = {k[len(_DDP_PREFIX) :]: v for k, v in state.items()}
    if prefix:
        selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not selected:
            tops = sorted({k.split(".", 1)[0] + "." for k in state})
            raise WeightsError(f"{path}: no key starts with prefix {prefix!r}; top-level prefixes: {_listing(tops)}")
        state = selected
    if rename:
        # Longest first, so that a specific rule ("layer1.0.") wins over a general one ("layer1.").
        rules = sorted(rename.items(), key=lambda kv: len(kv[0]), reverse=True)
        renamed = {}
        for k, v in state.items():
            old, new = next(((o, n) for o, n in rules if k.startswith(o)), ("", ""))
            renamed[new + k[len(old) :]] = v
        state = renamed
    return state


def load_state_dict_file(
    module: nn.Module,
    path: str | Path,
    prefix: str = "",
    strict: bool = True,
    rename: Mapping[str, str] | None = None,
) -> None:
    """Load the local weights file ``path`` into ``module`` (in place, on the module's device and dtype).

    Args:
        module: the network to fill.
        path: a ``.pt``/``.pth`` file: state dict, or checkpoint dict with ``state_dict`` / ``model``.
        prefix: keep only keys starting with it, stripped (``"backbone."``); applied after ``module.`` stripping.
        strict: missing or unexpected keys are errors (always logged when not strict).
        rename: key prefix replacements applied after ``prefix`` (see the module docstring).

    Raises:
        WeightsError: see :func:`read_state_dict`; and when the keys do not fit, with the missing keys, the
            unexpected keys and every shape mismatch as ``name: file (a, b) vs model (c, d)``.
    """
    state = read_state_dict(path, prefix=prefix, rename=rename)
    own = module.state_dict()
    # Old checkpoints (torchvision's ImageNet ResNets among them) predate BatchNorm's num_batches_tracked;
    # BatchNorm fills it in itself when loading, so its absence is not worth a complaint.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    problems = []
    if mismatched:
        lines = [f"{k}: file {_shape(state[k])} vs model {_shape(own[k])}" for k in mismatched]
        shown = "\n  ".join(lines[:MAX_LISTED])
        more = f"\n  ... (+{len(lines) - MAX_LISTED} more)" if len(lines) > MAX_LISTED else ""
        problems.append(f"shape mismatches ({len(mismatched)}):\n  {shown}{more}")
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if problems:
        hint = "" if prefix or rename else " (a sub-tree of a bigger model? pass prefix=..., e.g. 'backbone.')"
        raise WeightsError(f"{path} does not fit {type(module).__name__}{hint}:\n" + "\n".join(problems))
    if missing or unexpected:
        log.warning(
            "%s loaded non-strictly into %s: %d missing keys [%s], %d unexpected keys [%s]",
            path,
            type(module).__name__,
            len(missing),
            _listing(missing),
            len(unexpected),
            _listing(unexpected),
        )
    fitting = {k: v for k, v in state.items() if k in own}
    if not fitting:  # a non-strict load that loads nothing is a wrong file or prefix, never what was meant
        raise WeightsError(f"{path}: none of its {len(state)} tensors fit {type(module).__name__} (prefix {prefix!r})")
    module.load_state_dict(fitting, strict=False)
    log.info("loaded %d tensors from %s into %s", len(fitting), path, type(module).__name__)

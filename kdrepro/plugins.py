"""Plugins: modules outside kdrepro that register loss terms, curriculum scores, orders or pacings.

A plugin is a module whose import registers its components (``@register_term``, ``@register_score``, ...).
kdrepro imports it from two places, in every process that resolves a run config (the ``kdrepro``
command, its ``--jobs`` workers, submitit and Slurm jobs, the notebooks' kernels):

* the entry-point group :data:`GROUP` (``kdrepro.plugins``) of every installed package: an entry point
  names a module (``demo = "kdrepro_demo"``) or a function to call (``demo = "kdrepro_demo:register"``);
* the modules named by ``--plugin MODULE`` on the command line and by the environment variable
  :data:`ENV` (``KDREPRO_PLUGINS``, comma-separated). ``--plugin`` adds its modules to that variable, so
  that the worker processes the command starts load them too; a submitted job carries them as well
  (:class:`kdrepro.executors.TrainRun`).

Loading is idempotent and happens once per process. A plugin that fails to import is one line
(:class:`PluginError`) naming it and where it was named. Registering a component changes no run id.
"""
from __future__ import annotations

import importlib
import os
from typing import Iterable

#: the entry-point group of installed plugin packages
GROUP = "kdrepro.plugins"
#: comma-separated plugin modules, read by every process
ENV = "KDREPRO_PLUGINS"

_loaded: dict[str, str] = {}
_scanned = False


class PluginError(ImportError):
    """A plugin that could not be loaded; the message names it and where it was named."""


def _named_in_env() -> list[str]:
    return [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]


def _load(target: str, source: str) -> None:
    if target in _loaded:
        return
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        if attr:
            for part in attr.split("."):
                obj = getattr(obj, part)
            obj()
    except Exception as err:  # noqa: BLE001 - any failure of a plugin's own code is reported as its failure
        first = (str(err).strip().splitlines() or [""])[0]
        raise PluginError(f"plugin {target!r} ({source}) failed to load: {type(err).__name__}: {first}") from None
    _loaded[target] = source


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import every plugin: the entry points of :data:`GROUP` (scanned once per process), the modules of
    :data:`ENV`, and ``modules``; return the plugins loaded so far in this process."""
    global _scanned
    if not _scanned:
        _scanned = True
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            _load(ep.value, f"entry point {ep.name} of {GROUP}" + (f" in {ep.dist.name}" if ep.dist else ""))
    for module in modules:
        _load(module, "--plugin")
    for module in _named_in_env():
        _load(module, f"${ENV}")
    return list(_loaded)


def use_plugins(modules: Iterable[str]) -> list[str]:
    """``--plugin``: add ``modules`` to :data:`ENV` (so that the worker processes started from here load
    them), then load every plugin."""
    modules = [m for m in modules if m]
    if modules:
        named = _named_in_env()
        os.environ[ENV] = ",".join(dict.fromkeys([*named, *modules]))
    return load_plugins(modules)


def named_plugins() -> list[str]:
    """The plugin modules named for this process (:data:`ENV`), which a submitted job loads again."""
    return _named_in_env()

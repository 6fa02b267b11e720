"""ClientApps of installed FABs: each FAB unpacked once per hash, its code imported once per hash.

Stock Flower unpacks and hash-checks the FAB for every message. Here a hash seen before is
served from memory. A new hash (the app's code or config changed) drops the app's own modules
from `sys.modules`, so they are imported again from the new install folder, as a fresh
`flwr-clientapp` would; third-party modules (torch, transformers) stay imported.
"""

from __future__ import annotations

import gc
import hashlib
import sys
from pathlib import Path

from flwr.cli.install import install_from_fab
from flwr.clientapp.client_app import ClientApp
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.config import get_project_config
from flwr.supercore.fab import Fab
from flwr.supercore.run import Run


def _app_package(install: Path) -> str:
    """Top-level package of the FAB's ClientApp, e.g. `feddqc_flwr` for `feddqc_flwr.app.client_app:app`."""
    ref = get_project_config(install)["tool"]["flwr"]["app"]["components"]["clientapp"]
    return ref.split(":")[0].split(".")[0]


def _forget_modules(package: str) -> None:
    """Drop the package's modules, first emptying their `functools` caches (the cached base model):
    reference cycles between old modules could keep a model alive while the new code loads its
    own, doubling peak memory."""
    names = [n for n in sys.modules if n == package or n.startswith(package + ".")]
    for name in names:
        for value in list(vars(sys.modules[name]).values()):
            if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", None) == name:
                value.cache_clear()
        del sys.modules[name]
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class InstalledApps:
    """Installs FABs and loads their ClientApp, remembering which FAB's code is imported."""

    def __init__(self) -> None:
        self._installed: dict[str, Path] = {}
        self._imported: str | None = None
        self._load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)

    def client_app(self, run: Run, fab: Fab) -> ClientApp:
        digest = hashlib.sha256(fab.content).hexdigest()
        if digest not in self._installed:
            self._installed[digest] = install_from_fab(fab.content, skip_prompt=True)
        install = str(self._installed[digest].absolute())
        if digest != self._imported:
            _forget_modules(_app_package(Path(install)))
            # Flower inserts the install folder at the front of sys.path only once; another FAB's
            # folder may be in front of it now.
            while install in sys.path:
                sys.path.remove(install)
            sys.path.insert(0, install)
            self._imported = digest
        return self._load(run.fab_id, run.fab_version, fab.hash_str)

"""The optional packages behind opt-in features, and one clear line when one is missing.

``full_text`` and ``opencc`` need packages of the ``extras`` extra. The config
refuses such a transform when its package is not installed at all (a cheap
look-up at every load); ``aggregator check`` imports each one an enabled
transform needs, which also finds a package that is there but broken (lxml
without its ``html_clean`` part, which trafilatura's dependencies import);
and the transforms import them through :func:`load`, so a missing module
never ends in a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from aggregator.errors import MissingDependency

INSTALL_HINT = "pip install 'aggregator[extras]'"
# The module each feature imports, and the distribution that provides it.
FEATURE_MODULES: dict[str, tuple[str, str]] = {
    "full_text": ("trafilatura", "trafilatura"),
    "opencc": ("opencc", "opencc-python-reimplemented"),
}


def _missing(feature: str, detail: str) -> MissingDependency:
    _module, package = FEATURE_MODULES[feature]
    return MissingDependency(f"{feature} needs the {package} package ({detail}): {INSTALL_HINT}")


def installed(feature: str) -> str | None:
    """None when the feature's package is installed, else the error to report (no import made)."""
    module, _package = FEATURE_MODULES[feature]
    if importlib.util.find_spec(module) is None:
        return str(_missing(feature, f"no module named {module!r}"))
    return None


def load(feature: str) -> ModuleType:
    """Import the feature's package, or raise MissingDependency naming the extra to install."""
    module, _package = FEATURE_MODULES[feature]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _missing(feature, "import failed: " + " ".join(str(error).split())) from error

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version


def version() -> str:
    try:
        return _dist_version("afterlive")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"

"""cxrlib: the small package behind the cxr-anomaly notebooks.

One module per idea: ``data`` (loading, splits, phantoms), ``patching``, ``metrics``, ``viz``,
``utils`` and, as the methods arrive, the models. Importing ``cxrlib`` imports no torch; the
modules that need it import it themselves.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "print_config"]


def print_config() -> None:
    """Print the versions that matter for reproducing a notebook, and the device in use."""
    import platform

    import numpy

    lines = [f"cxrlib {__version__}", f"python {platform.python_version()}", f"numpy {numpy.__version__}"]
    try:
        import torch

        dev = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
        lines += [f"torch {torch.__version__}", f"device {dev}", f"threads {torch.get_num_threads()}"]
    except ImportError:
        lines.append("torch not installed")
    print("\n".join(lines))

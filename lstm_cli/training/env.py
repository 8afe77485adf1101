"""Environment facts recorded in checkpoints: the BLAS library numpy loaded and its threads."""

from __future__ import annotations

import ctypes
import os

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_OPENBLAS_GETTERS = (
    "openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
)


def blas_threads() -> dict:
    """What decides the BLAS's summation order: the library numpy loaded and its thread
    count (asked from OpenBLAS itself when possible), plus the thread variables. Recorded
    in checkpoints because bitwise-identical resumes assume the same values."""
    info = {
        "env": {v: os.environ[v] for v in THREAD_VARIABLES if v in os.environ},
        "library": None,
        "threads": None,
    }
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            libs = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower()})
    except OSError:
        return info
    for path in libs:
        info["library"] = os.path.basename(path)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _OPENBLAS_GETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                info["threads"] = int(fn())
                return info
    return info

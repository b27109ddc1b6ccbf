"""Optional native kernels, compiled on first use with the system C compiler and loaded with ctypes.

No torch headers are involved, so a build takes well under a second; the shared object is cached per
source, compiler flags and CPU model in ``$DQLTOOLKIT_CACHE`` (default ``~/.cache/dqltoolkit``). If no
compiler is found or the build fails, :func:`native_lib` returns None and callers use PyTorch ops.
Set ``DQLTOOLKIT_NATIVE=0`` to disable.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional

_SRC = Path(__file__).parent / "csrc" / "mish.c"
_FLAGS = ["-O3", "-ffast-math", "-march=native", "-shared", "-fPIC"]
if platform.machine() in ("x86_64", "AMD64"):
    # gcc defaults to 256-bit vectors even where AVX-512 exists; the Mish loops are compute-bound and run
    # 1.35x faster at full width (harmless on CPUs without AVX-512: -march=native then has no 512-bit unit)
    _FLAGS.append("-mprefer-vector-width=512")


def cache_dir() -> Path:
    return Path(os.environ.get("DQLTOOLKIT_CACHE", Path.home() / ".cache" / "dqltoolkit"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


@lru_cache(maxsize=1)
def native_lib() -> Optional[ctypes.CDLL]:
    if os.environ.get("DQLTOOLKIT_NATIVE", "1") == "0" or platform.system() != "Linux":
        return None
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None or not _SRC.is_file():
        return None
    key = hashlib.sha256(_SRC.read_bytes() + " ".join(_FLAGS + ["omp"]).encode() + _cpu_model().encode() + platform.machine().encode()).hexdigest()[:16]
    so = cache_dir() / f"dql_native_{key}.so"
    if not so.is_file() and not _build(cc, so):
        return None
    try:
        lib = ctypes.CDLL(str(so))
        lib.dql_mish_fwd.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        lib.dql_mish_bwd.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.dql_mish_bias_fwd.argtypes = [p, p, p, i64, i64, i64, ctypes.c_int]
        lib.dql_mish_bias_bwd.argtypes = [p, p, p, p, i64, i64, i64, ctypes.c_int]
        return lib
    except OSError:
        return None


def _build(cc: str, so: Path) -> bool:
    """Compile with OpenMP (bound to torch's libgomp.so.1, see mish.c), else without; atomic rename."""
    so.parent.mkdir(parents=True, exist_ok=True)
    for extra in (["-fopenmp"], []):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=so.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *_FLAGS, *extra, str(_SRC), "-o", tmp, "-lm"], check=True, capture_output=True, timeout=120)
            os.replace(tmp, so)  # atomic: parallel test workers may build at once
            return True
        except (OSError, subprocess.SubprocessError):
            if os.path.exists(tmp):
                os.unlink(tmp)
    return False


_FUSED_SRC = Path(__file__).parent / "csrc" / "fused.cpp"


@lru_cache(maxsize=1)
def fused_ops():
    """The operators of csrc/fused.cpp as ``torch.ops.dqltoolkit``, built on first use; None if unavailable.

    Unlike the Mish library this one includes ATen headers, so it is compiled against the installed torch
    (about 10 s, once per torch version, source and CPU; cached like the Mish library). Any failure
    (no C++ compiler, no headers, an ABI mismatch) leaves the eager PyTorch path in use.
    Set ``DQLTOOLKIT_FUSED=0`` (or ``DQLTOOLKIT_NATIVE=0``) to disable.
    """
    if os.environ.get("DQLTOOLKIT_FUSED", "1") == "0" or native_lib() is None:
        return None
    import torch

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cxx is None or cc is None or not _FUSED_SRC.is_file():
        return None
    torch_dir = Path(torch.__file__).parent
    abi = "1" if torch.compiled_with_cxx11_abi() else "0"
    cxx_flags = ["-O3", "-march=native", "-std=c++17", "-fPIC", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
                 f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}"]
    link = [f"-L{torch_dir / 'lib'}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}", "-lm"]
    key = hashlib.sha256(_FUSED_SRC.read_bytes() + _SRC.read_bytes() + " ".join(_FLAGS + cxx_flags + link).encode()
                         + torch.__version__.encode() + _cpu_model().encode() + platform.machine().encode()).hexdigest()[:16]
    so = cache_dir() / f"dql_fused_{key}.so"
    if not so.is_file():
        import sys

        print(f"dqltoolkit: compiling the fused CPU operators for torch {torch.__version__} (once, about 10 s) ...",
              file=sys.stderr, flush=True)
        error = _build_fused(cc, cxx, cxx_flags, link, so)
        if error:
            _warn_slow_path(f"could not compile {_FUSED_SRC.name} ({error})")
            return None
    try:
        torch.ops.load_library(str(so))
        return torch.ops.dqltoolkit
    except (OSError, RuntimeError) as exc:
        _warn_slow_path(f"could not load {so} ({exc})")
        return None


def _warn_slow_path(why: str) -> None:
    import warnings

    warnings.warn(f"dqltoolkit: {why}; CPU training falls back to the eager PyTorch path, about 1.4x slower per Diffusion-QL step. "
                  "Set DQLTOOLKIT_FUSED=0 to silence this.", RuntimeWarning, stacklevel=3)


def _build_fused(cc: str, cxx: str, cxx_flags: list, link: list, so: Path) -> str:
    """mish.c with the Mish library's flags (fast math stays out of the ATen translation unit), then
    fused.cpp, linked into one shared object against torch's libraries; atomic rename. Returns "" on
    success, else the last line of the compiler's complaint."""
    so.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
        mish_o, out = Path(tmp) / "mish.o", Path(tmp) / "fused.so"
        try:
            subprocess.run([cc, *[f for f in _FLAGS if f != "-shared"], "-fopenmp", "-c", str(_SRC), "-o", str(mish_o)],
                           check=True, capture_output=True, timeout=120)
            subprocess.run([cxx, *cxx_flags, "-shared", str(_FUSED_SRC), str(mish_o), "-o", str(out), "-fopenmp", *link],
                           check=True, capture_output=True, timeout=600)
            os.replace(out, so)
            return ""
        except subprocess.CalledProcessError as exc:
            lines = [ln for ln in (exc.stderr or b"").decode(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else f"exit status {exc.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)[:300]

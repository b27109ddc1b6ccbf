"""The fused CPU operators (csrc/fused.cpp with csrc/mish.c), compiled on first use against the installed
torch and loaded as ``torch.ops.dqltoolkit``; without a compiler, or when the build fails, the eager PyTorch
path runs. ``DQLTOOLKIT_FUSED=0`` (or ``DQLTOOLKIT_NATIVE=0``) disables it.

The shared object is cached in the private cache folder (:mod:`dqltoolkit._cache`) per source, flags, torch
version and CPU, its SHA-256 recorded beside it: it is loaded only through an open file matching that digest.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from ._cache import CacheError, open_verified, private_dir, record_digest, sidecar

_SRC = Path(__file__).parent / "csrc" / "mish.c"
_FUSED_SRC = Path(__file__).parent / "csrc" / "fused.cpp"
_FLAGS = ["-O3", "-ffast-math", "-march=native", "-shared", "-fPIC"]
if platform.machine() in ("x86_64", "AMD64"):
    # gcc defaults to 256-bit vectors even where AVX-512 exists; the Mish loops are compute-bound and run
    # 1.35x faster at full width (harmless on CPUs without AVX-512: -march=native then has no 512-bit unit)
    _FLAGS.append("-mprefer-vector-width=512")


class BuildFailed(RuntimeError):
    """The compiler failed; the message is its last line of complaint."""


def _verified_library(name: str, build: Callable[[Path], str], load: Callable[[str], object]) -> object:
    """Load ``name`` from the private cache with ``load(path)``, first building it with ``build(path) -> "" or why not``
    where no verified copy exists; raises CacheError (unsafe folder), BuildFailed or what ``load`` raised."""
    import fcntl

    folder = private_dir()  # created 0700, refused if someone else could write it (CacheError)
    so = folder / name
    with open(folder / ".build.lock", "a") as lock:  # one build at a time per folder; closing the file unlocks it
        fcntl.flock(lock, fcntl.LOCK_EX)
        f = open_verified(so)
        if f is None:
            if so.exists() and sidecar(so).exists():
                warnings.warn(f"dqltoolkit: {so} does not match the SHA-256 recorded when it was built; it is not loaded, "
                              "and is built again", RuntimeWarning, stacklevel=3)
            fd, tmp = tempfile.mkstemp(prefix=f".{so.stem}-", suffix=".so", dir=folder)
            os.close(fd)
            try:
                error = build(Path(tmp))
                if error:
                    raise BuildFailed(error)
                os.chmod(tmp, 0o700)
                os.replace(tmp, so)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            record_digest(so)
            f = open_verified(so)
            if f is None:
                raise BuildFailed(f"{so} changed while it was being recorded")
    with f:
        fd_path = f"/proc/self/fd/{f.fileno()}"
        return load(fd_path if os.path.exists(fd_path) else str(so))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


@lru_cache(maxsize=1)
def fused_ops():
    """``torch.ops.dqltoolkit``, compiled against the installed torch on first use (about 10 s, once per torch
    version, source and CPU); None where anything fails (no C++ compiler, no headers, an ABI mismatch)."""
    if "0" in (os.environ.get("DQLTOOLKIT_FUSED", "1"), os.environ.get("DQLTOOLKIT_NATIVE", "1")) or platform.system() != "Linux":
        return None
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
    name = f"dql_fused_{key}.so"

    def build(out: Path) -> str:
        print(f"dqltoolkit: compiling the fused CPU operators for torch {torch.__version__} (once, about 10 s) ...",
              file=sys.stderr, flush=True)
        return _build_fused(cc, cxx, cxx_flags, link, out)

    def load(path: str):
        torch.ops.load_library(path)
        return torch.ops.dqltoolkit

    try:
        return _verified_library(name, build, load)
    except CacheError as exc:
        why = f"the fused CPU operators are not loaded: {exc}"
    except BuildFailed as exc:
        why = f"could not compile {_FUSED_SRC.name} ({exc})"
    except (OSError, RuntimeError) as exc:
        why = f"could not load {name} ({exc})"
    warnings.warn(f"dqltoolkit: {why}; CPU training falls back to the eager PyTorch path, about 1.9x slower per Diffusion-QL step. "
                  "Set DQLTOOLKIT_FUSED=0 to silence this.", RuntimeWarning, stacklevel=2)
    return None


def _build_fused(cc: str, cxx: str, cxx_flags: list, link: list, out: Path) -> str:
    """mish.c with its own flags (fast math stays out of the ATen unit), then fused.cpp, linked against torch
    into ``out``; "" on success, else the last line of the compiler's complaint."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        mish_o = Path(tmp) / "mish.o"
        try:
            subprocess.run([cc, *[f for f in _FLAGS if f != "-shared"], "-fopenmp", "-c", str(_SRC), "-o", str(mish_o)],
                           check=True, capture_output=True, timeout=120)
            subprocess.run([cxx, *cxx_flags, "-shared", str(_FUSED_SRC), str(mish_o), "-o", str(out), "-fopenmp", *link],
                           check=True, capture_output=True, timeout=600)
            return ""
        except subprocess.CalledProcessError as exc:
            lines = [ln for ln in (exc.stderr or b"").decode(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else f"exit status {exc.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)[:300]

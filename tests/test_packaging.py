"""The wheel carries the catalogues: install it in a fresh venv and train from another folder."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("dqltoolkit-*.whl")
    return whl


def test_wheel_ships_catalogues_and_native_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("dqltoolkit/_catalogue/agents/diffusion-ql.yaml", "dqltoolkit/_catalogue/agents/diffusion-bc.yaml",
                     "dqltoolkit/_catalogue/envs/bandit.yaml", "dqltoolkit/_catalogue/zoo/index.yaml",
                     "dqltoolkit/_catalogue/zoo/diffusion-ql-bandit2d-v0.zip", "dqltoolkit/csrc/mish.c",
                     "dqltoolkit/csrc/fused.cpp", "dqltoolkit/_catalogue/sweeps/bandit-eta.yaml"):
        assert required in names, required
    assert not any(n.startswith(("agents/", "envs/", "zoo/", "sweeps/", "tests/")) for n in names)


def test_installed_wheel_trains_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    # dependencies come from this environment's site-packages (a plain path entry: its .pth files, the
    # editable hook for the source tree among them, are not processed); dqltoolkit itself from the wheel
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    assert (venv / "bin" / "dqltoolkit").is_file()  # the console script
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import dqltoolkit, pathlib; print(pathlib.Path(dqltoolkit.__file__).parent);"
        "r = dqltoolkit.train('diffusion-bc', 'bandit2d-v0', 'run', steps=3, overrides={'T': 2, 'hidden': 8, 'batch_size': 16}, progress=False, verbose=False);"
        "print(r.checkpoints[0].is_file());"
        "print(dqltoolkit.zoo.fetch('diffusion-ql-bandit2d-v0'))"  # the shipped checkpoint, verified where the wheel put it
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    pkg_dir, ok, zoo_file = res.stdout.strip().splitlines()[-3:]
    assert pkg_dir.startswith(site) and ok == "True" and zoo_file == f"{pkg_dir}/_catalogue/zoo/diffusion-ql-bandit2d-v0.zip"

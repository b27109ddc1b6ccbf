"""docs/extending.md stays true: the code it shows is the example package's, character for character,
and its Python snippets and its recipe run (in a fresh interpreter, as a reader would run them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import dqltoolkit

ROOT = Path(dqltoolkit.__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
EXAMPLE = ROOT / "docs" / "examples" / "dql_plugin_example"
FENCE = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)


def blocks() -> List[Tuple[Optional[str], str, str]]:
    """(included file or None, language, text) of every fenced block of the page, in order."""
    return [(m["file"], m["lang"], m["body"] + "\n") for m in FENCE.finditer(DOC.read_text())]


def test_the_page_shows_the_example_package_verbatim():
    included = {f: body for f, _, body in blocks() if f is not None}
    expected = {"docs/examples/dql_plugin_example/pyproject.toml"} | {
        f"docs/examples/dql_plugin_example/dql_plugin_example/{m}.py" for m in ("tempered_head", "expectile_critic", "boosted_ql")}
    assert set(included) == expected
    for path, body in included.items():
        assert body == (ROOT / path).read_text(), f"docs/extending.md shows an outdated copy of {path}"


RUNNER = """
import json, sys
from pathlib import Path
doc = json.loads(Path(sys.argv[1]).read_text())
ns = {"__name__": "__extending__"}
for i, code in enumerate(doc["python"]):
    exec(compile(code, f"docs/extending.md python block {i}", "exec"), ns)
from dqltoolkit.config import resolve_recipe
for i, text in enumerate(doc["yaml"]):
    path = Path(f"recipe{i}.yaml")
    path.write_text(text)
    cfg = resolve_recipe(str(path), "bandit2d-v0").config
    print("RECIPE", json.dumps({"head": cfg.head, "critic": cfg.critic, "noise_scale": cfg.noise_scale, "expectile": cfg.expectile}))
print("SNIPPETS RAN", len(doc["python"]))
"""


def test_the_snippets_and_the_recipe_of_the_page_run(tmp_path):
    found = blocks()
    python = [body for f, lang, body in found if lang == "python" and f is None]
    yaml_blocks = [body for f, lang, body in found if lang == "yaml"]
    assert len(python) == 4 and len(yaml_blocks) == 1
    (tmp_path / "doc.json").write_text(json.dumps({"python": python, "yaml": yaml_blocks}))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)]), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "runner.py", "doc.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SNIPPETS RAN 4" in proc.stdout
    recipe = json.loads(proc.stdout.split("RECIPE ", 1)[1].splitlines()[0])
    assert recipe == {"head": "tempered-diffusion", "critic": "expectile", "noise_scale": 0.5, "expectile": 0.8}

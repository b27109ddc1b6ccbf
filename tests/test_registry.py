from importlib import metadata

import pytest

from dqltoolkit.registry import HEADS, Registry, UnknownNameError


def test_register_and_get():
    r = Registry("widget")
    r.register("alpha", 1)

    @r.register("beta")
    def beta():
        return 2

    assert r.get("alpha") == 1 and r.get("beta") is beta
    assert r.names() == ["alpha", "beta"]
    with pytest.raises(ValueError, match="already registered"):
        r.register("alpha", 3)


def test_unknown_name_suggests_close_matches():
    import dqltoolkit.heads  # noqa: F401

    with pytest.raises(UnknownNameError) as e:
        HEADS.get("difusion")
    assert "unknown head 'difusion'" in str(e.value)
    assert "Did you mean 'diffusion'" in str(e.value)


def test_entry_point_plugins_are_discovered(monkeypatch):
    class FakeEP:
        name = "plugin-head"
        value = "somepkg:Head"

        def load(self):
            return "LOADED"

    def fake_entry_points(group=None):
        return [FakeEP()] if group == "dqltoolkit.test-plugins" else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    r = Registry("head", "dqltoolkit.test-plugins")
    assert "plugin-head" in r.names()
    assert r.get("plugin-head") == "LOADED"


def test_every_module_of_a_parts_package_is_imported_so_a_new_part_is_a_new_file():
    """No built-in part needs an import line in its package's __init__: each module in heads/, critics/ and
    objectives/ is imported with the package (the consistency head, iql critic and awr objective are in no
    __init__ line)."""
    import pkgutil
    import sys

    import dqltoolkit.critics
    import dqltoolkit.heads
    import dqltoolkit.objectives
    from dqltoolkit.registry import CRITICS, HEADS, OBJECTIVES

    for pkg in (dqltoolkit.heads, dqltoolkit.critics, dqltoolkit.objectives):
        modules = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
        assert modules and all(f"{pkg.__name__}.{m}" in sys.modules for m in modules), modules
        init = open(pkg.__file__).read()
        assert "import_part_modules(__name__, __path__)" in init
    assert "consistency" not in open(dqltoolkit.heads.__file__).read()
    assert {"consistency", "diffusion"} <= set(HEADS.names()) and "iql" in CRITICS.names() and "awr" in OBJECTIVES.names()

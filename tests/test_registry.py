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

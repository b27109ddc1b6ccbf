"""Example dqltoolkit parts, shipped as a plugin package (see docs/extending.md).

Nothing is registered on import: dqltoolkit finds each part by the name its entry point gives it
(pyproject.toml), the first time that name is looked up. Code that uses the parts without installing
the package registers them itself: ``CRITICS.register("expectile", ExpectileValueCritic)``.
"""

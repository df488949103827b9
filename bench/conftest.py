"""Markers of the pytest-benchmark cases in this folder."""


def pytest_configure(config):
    config.addinivalue_line("markers",
                            "quick: a layer of the `python -m fastconv bench --quick` subset")

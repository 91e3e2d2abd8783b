import sys
from pathlib import Path

import pytest

# Test helpers (ros_graph.py, ...) live beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A random-weight `tiny` model exported once per test session (the node tests' model)."""
    from ros_graph import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp() / "models")

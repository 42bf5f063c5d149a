"""The service in process (FastAPI's TestClient), without a socket: one app per test module."""
import pytest
from fastapi.testclient import TestClient

from api import Settings, create_app
from helpers import INPROC_KEY, INPROC_OTHER, INPROC_ROOT, INPROC_WORKER, INPROC_WORKER2


@pytest.fixture(scope="module")
def client(tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("inproc")
    tiny_index(40, classes=2, seed=5, into=root)
    (root / "keys.txt").write_text(f"carol:curate:{INPROC_KEY}\nmallory:curate:{INPROC_OTHER}\nroot:admin:{INPROC_ROOT}\n"
                                  f"fleet:worker:{INPROC_WORKER}\nfleet2:worker:{INPROC_WORKER2}\n")
    app = create_app(Settings(index_dir=root / "index", data_dir=root / "data", api_keys_file=root / "keys.txt"))
    with TestClient(app, headers={"Authorization": f"Bearer {INPROC_KEY}"}) as c:
        c.dim = app.state.pool.current().manifest.dim
        yield c

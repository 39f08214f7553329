"""The ``workerfacing-api`` command as an operator meets it: clear one-line errors, migrations,
the sweeper, and the README's embedding example."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Server

# Real processes on 127.0.0.1 (serve, the fake upstream, moto): docs/TESTING.md.
pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "COGNITO_"))}
    return subprocess.run(
        [sys.executable, "-m", "workerfacing_api.entrypoints.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"QUEUE_DB_URL": "mysql://db/x"}, "QUEUE_DB_URL"),
        ({"QUEUE_DB_URL": "postgresql://u:{}@127.0.0.1/db"}, "QUEUE_DB_SECRET"),
        ({"QUEUE_DB_URL": "postgresql://nobody@127.0.0.1:1/nowhere"}, "QUEUE_DB_URL"),
        (
            {"QUEUE_DB_SECRET": '{"user": "x"}', "QUEUE_DB_URL": "postgresql://u:{}@h/d"},
            "QUEUE_DB_SECRET",
        ),
        ({"MAX_RETRIES": "many"}, "MAX_RETRIES"),
        ({"FILESYSTEM": "nfs"}, "FILESYSTEM"),
        ({"HOST": "999.1.1.1"}, "HOST"),
    ],
)
def test_misconfigured_serve_stops_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = cli("serve", "--port", "0", cwd=tmp_path, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", cwd=tmp_path, env={"PORT": str(port)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"PORT={port}" in lines[0]
    assert "in use" in lines[0]


def test_db_upgrade_then_current(tmp_path: Path) -> None:
    env = {"QUEUE_DB_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    assert "no schema yet" in cli("db", "current", cwd=tmp_path, env=env).stdout
    upgraded = cli("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "up to date" in upgraded.stdout
    assert cli("db", "current", cwd=tmp_path, env=env).stdout.strip() == "0010"


def test_token_needs_a_username(tmp_path: Path) -> None:
    result = cli("token", "--username", " ", cwd=tmp_path)
    assert result.returncode == 2
    assert "--username" in result.stderr


def test_sweep_once_requeues_a_silent_job(server: Server) -> None:
    server.submit()
    (job_id,) = server.pull("w").keys()
    assert server.db_path is not None
    # The worker went silent an hour ago.
    with sqlite3.connect(server.db_path) as conn:
        conn.execute("UPDATE jobs SET last_heartbeat_at = '2000-01-01 00:00:00.000000'")
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    result = cli("sweep", "--once", cwd=server.root, env=env)
    assert result.returncode == 0, result.stderr
    assert "re-queued 1 job(s), failed 0 job(s)" in result.stdout
    status = requests.get(f"{server.url}/jobs/{job_id}/status", headers=server.auth(), timeout=10)
    assert status.json() == "queued"
    # The same worker may not take it again (RETRY_DIFFERENT); another one may.
    assert server.pull("w") == {}
    assert list(server.pull("other")) == [job_id]


def test_readme_embedding_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[-1])
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "finished"]


def test_jobs_stats_and_show(server: Server) -> None:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    server.submit()
    server.submit()
    (queue_id,) = server.pull("w")
    stats = cli("jobs", "stats", "--json", cwd=server.root, env=env)
    assert stats.returncode == 0, stats.stderr
    figures = json.loads(stats.stdout)
    assert figures["by_status"]["queued"] == 1
    assert figures["by_status"]["pulled"] == 1
    assert figures["outbox_backlog"] == 0
    assert figures["oldest_queued_age"] >= 0
    text = cli("jobs", "stats", cwd=server.root, env=env).stdout
    assert "queued 1, pulled 1" in text
    shown = cli("jobs", "show", queue_id, cwd=server.root, env=env)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert (view["status"], view["worker"]) == ("pulled", "w")
    assert [a["worker"] for a in view["attempts"]] == ["w"]
    missing = cli("jobs", "show", "424242", cwd=server.root, env=env)
    assert missing.returncode == 2
    assert "424242" in missing.stderr


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_token_elsewhere_refuses_to_make_a_key_no_serve_uses(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = one_line_error(cli("token", "--username", "w", cwd=elsewhere))
    assert str(elsewhere / ".workerfacing-api") in line
    assert "LOCAL_STATE_DIR" in line
    assert "--init" in line
    assert list(elsewhere.iterdir()) == []  # no key, no folder
    made = cli("token", "--init", "--username", "w", cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    assert (elsewhere / ".workerfacing-api" / "identity.key").is_file()
    again = cli("token", "--username", "w", cwd=elsewhere)  # the key is there now
    assert again.returncode == 0, again.stderr


def test_token_uses_the_key_serve_made(server: Server) -> None:
    env = {"LOCAL_STATE_DIR": str(server.root / ".workerfacing-api")}
    result = cli("token", "--username", "w", cwd=server.root, env=env)
    assert result.returncode == 0, result.stderr
    pulled = requests.get(
        f"{server.url}/jobs",
        params={"limit": 1, "cpu_cores": 8, "memory": 64000},
        headers={"Authorization": f"Bearer {result.stdout.strip()}"},
        timeout=10,
    )
    assert pulled.status_code == 200, pulled.text


READING = [("jobs", "stats"), ("jobs", "show", "1"), ("jobs", "why", "1"), ("workers",)]


@pytest.mark.parametrize("command", READING)
def test_a_misspelt_sqlite_path_is_refused_not_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    database = tmp_path / "no-such-folder" / "queue.db"
    line = one_line_error(
        cli(*command, cwd=tmp_path, env={"QUEUE_DB_URL": f"sqlite:///{database}"})
    )
    assert "QUEUE_DB_URL" in line
    assert str(database.parent) in line
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the keys were made


def test_db_current_does_not_create_a_missing_database(tmp_path: Path) -> None:
    database = tmp_path / "queue.db"
    result = cli("db", "current", cwd=tmp_path, env={"QUEUE_DB_URL": f"sqlite:///{database}"})
    assert "no schema yet" in result.stdout
    assert not database.exists()
    missing_folder = f"sqlite:///{tmp_path / 'nope' / 'queue.db'}"
    assert "QUEUE_DB_URL" in one_line_error(
        cli("db", "current", cwd=tmp_path, env={"QUEUE_DB_URL": missing_folder})
    )


@pytest.mark.parametrize("command", READING)
def test_an_unreachable_database_hints_at_the_url_not_at_migrations(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"QUEUE_DB_URL": f"postgresql://nobody@127.0.0.1:{port}/nowhere"}
    line = one_line_error(cli(*command, cwd=tmp_path, env=env))
    assert "QUEUE_DB_URL" in line
    assert "check" in line
    assert "db upgrade" not in line


@pytest.mark.parametrize("command", READING)
def test_a_database_without_tables_hints_at_db_upgrade(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    database = tmp_path / "queue.db"
    sqlite3.connect(database).close()  # a database, empty
    line = one_line_error(
        cli(*command, cwd=tmp_path, env={"QUEUE_DB_URL": f"sqlite:///{database}"})
    )
    assert "QUEUE_DB_URL" in line
    assert "run: workerfacing-api db upgrade" in line


def test_sweep_once_prints_its_answer_without_alembic_chatter(tmp_path: Path) -> None:
    env = {"QUEUE_DB_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    result = cli("sweep", "--once", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "re-queued 0 job(s), failed 0 job(s)\n"
    assert "alembic" not in result.stderr
    assert "Context impl" not in result.stderr


def test_workers_help_shows_the_action_optional_and_token_help_names_operators(
    tmp_path: Path,
) -> None:
    usage = cli("workers", "--help", cwd=tmp_path).stdout
    assert "[ACTION ...]" in usage
    assert "operator" in " ".join(cli("token", "--help", cwd=tmp_path).stdout.split())


def test_workers_groups_memory_as_the_dashboard_does(server: Server) -> None:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    server.pull("w", memory=64000, gpu_mem=24576, gpu_model="A100", gpu_archi="ampere")
    listing = cli("workers", cwd=server.root, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "64\u2009000 MiB" in listing.stdout
    assert "24\u2009576 MiB" in listing.stdout


@pytest.mark.parametrize(
    "form", ["{id}", "/jobs/{id}/status", "http://127.0.0.1:8001/jobs/{id}/status"]
)
def test_jobs_show_takes_the_location_of_a_queued_job(server: Server, form: str) -> None:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    server.submit()
    (queue_id,) = server.pull("w")
    shown = cli("jobs", "show", form.format(id=queue_id), cwd=server.root, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == int(queue_id)
    refused = cli("jobs", "show", "/jobs/x/status", cwd=server.root, env=env)
    assert refused.returncode == 2
    assert "is not a queue id" in refused.stderr


def test_demand_prints_the_classes_as_json(server: Server) -> None:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    big = server.job_body()
    big["job"]["hardware"]["gpu_mem"] = 80000
    server.submit(big)
    server.submit()
    server.pull("w", gpu_mem=24000)  # a node seen, which takes the job it fits
    shown = cli("demand", cwd=server.root, env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["queued"], report["nodes_seen"], report["no_node_can_run"]) == (1, 1, 1)
    (waiting,) = report["classes"]
    assert (waiting["gpu_mem"], waiting["no_node_can_run"]) == (80000, 1)
    assert "80 000 MiB of GPU memory" in waiting["reason"]


def test_jobs_fail_stops_the_worker_and_audit_lists_it(server: Server) -> None:
    env = {
        "QUEUE_DB_URL": f"sqlite:///{server.db_path}",
        "LOCAL_STATE_DIR": str(server.root / ".workerfacing-api"),
    }
    server.submit()
    (job_id,) = server.pull("w").keys()
    assert cli("audit", cwd=server.root, env=env).stdout == "no operator has acted yet\n"
    failed = cli(
        "jobs", "fail", job_id, "--reason", "input file is corrupt", cwd=server.root, env=env
    )
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout == f"job {job_id}: failed (it was pulled on worker w)\n"
    # The worker's next ping: 404, its signal to stop.
    ping = requests.put(
        f"{server.url}/jobs/{job_id}/status",
        params={"status": "running"},
        headers=server.auth("w"),
        timeout=10,
    )
    assert ping.status_code == 404
    again = cli("jobs", "fail", job_id, "--reason", "twice", cwd=server.root, env=env)
    assert (again.returncode, again.stdout) == (1, f"job {job_id}: not failed: it is error\n")
    blank = cli("jobs", "fail", job_id, "--reason", " ", cwd=server.root, env=env)
    assert blank.returncode != 0
    assert (
        blank.stderr.strip()
        .splitlines()[-1]
        .endswith("say why the job is failed: the reason is shown to its user")
    )
    listed = cli("audit", "--json", cwd=server.root, env=env)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [(e["action"], e["jobs"]) for e in entries] == [
        ("fail", [int(job_id)]),
        ("fail", [int(job_id)]),
    ]
    assert entries[-1]["actor"].startswith("cli")
    assert entries[-1]["detail"] == (
        f"reason: input file is corrupt; job {job_id}: failed (it was pulled on worker w)"
    )
    text = cli("audit", "--limit", "1", cwd=server.root, env=env)
    assert text.stdout.count("\n") == 1
    assert f"fail {job_id} jobs {job_id}: reason: twice" in text.stdout

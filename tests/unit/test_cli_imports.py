"""The command line loads only what a command uses: importing it (what ``--help`` and every
command pay first) brings in neither the web framework, nor SQLAlchemy, nor the AWS SDK."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("litestar", "sqlalchemy", "boto3", "botocore", "aiohttp", "alembic", "uvicorn")


def test_importing_the_cli_loads_no_framework_driver_or_sdk() -> None:
    probe = (
        "import json, sys\n"
        "import workerfacing_api.entrypoints.cli\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []

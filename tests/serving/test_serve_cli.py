"""`tlrec serve` refuses, with one line and exit code 2, what it cannot serve safely."""

from __future__ import annotations

import os
import subprocess
import sys


def _serve(repo, artifacts, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLREC_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "tlrec.services.cli", "serve", "--artifacts", str(artifacts), "--port", "9"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120,
    )


def test_refuses_to_start_without_keys(world, repo):
    proc = _serve(repo, world.artifacts)
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "--insecure" in proc.stderr and "TLREC_API_KEYS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refuses_a_corrupt_artifact_before_binding(world, repo, tmp_path):
    import shutil

    bad = shutil.copytree(world.ncf_version, tmp_path / "v1")
    (bad / "users.json").write_text("[]")
    proc = _serve(repo, bad, {"TLREC_API_KEYS": "k"})
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "users.json" in error[0] and "mismatch" in error[0]
    assert "Traceback" not in proc.stderr

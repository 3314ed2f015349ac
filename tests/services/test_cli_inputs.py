"""A missing input is refused at once: before the command imports torch, ray or transformers (issue 16, item 13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

COMMANDS = {
    "train": ["train", "--catalog", "nope.csv", "--interactions", "nope.csv", "--out", "a"],
    "score": ["score", "--artifacts", ".", "--users", "nope.txt", "--k", "3", "--out", "r.parquet"],
    "predict": ["predict", "--artifacts", "nope", "--users", "u.txt", "--out", "p.parquet"],
    "evaluate": ["evaluate", "--artifacts", ".", "--interactions", "nope.parquet"],
    "embed": ["embed", "--catalog", "nope.csv", "--out", "v.parquet"],
    "serve": ["serve", "--artifacts", ".", "--return", "nope", "--insecure"],
    "ab analyze": ["ab", "analyze", "nope.yaml", "--exposures", "e.jsonl", "--outcomes", "o.parquet"],
}
EXPECTED = {
    "train": "error: nope.csv: no such file or folder (--catalog)",
    "score": "error: nope.txt: no such file or folder (--users)",
    "predict": "error: nope: no such file or folder (--artifacts)",
    "evaluate": "error: nope.parquet: no such file or folder (--interactions)",
    "embed": "error: nope.csv: no such file or folder (--catalog)",
    "serve": "error: nope: no such file or folder (--return)",
    "ab analyze": "error: nope.yaml: no such file or folder (EXPERIMENT)",
}
PROBE = """
import contextlib, io, json, sys
from tlrec.services.cli import app
answers = {}
for name, args in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = app(args, standalone_mode=False)  # typer.Exit(code) returns its code here
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # click's own exit
            code = getattr(exc, "exit_code", repr(exc))
    answers[name] = [code, err.getvalue().strip()]
heavy = sorted(m for m in ("torch", "ray", "transformers", "faiss", "sklearn") if m in sys.modules)
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def test_missing_inputs_answer_in_one_line_before_any_heavy_import(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(COMMANDS)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (code, line) in result["answers"].items():
        assert code == 2 and line == EXPECTED[name], (name, code, line)
    assert result["heavy"] == []  # before: torch and transformers loaded (7-8 s) to say a file is missing

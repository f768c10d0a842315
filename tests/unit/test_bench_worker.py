"""The pipeline benchmark's worker runs the code the benchmark itself runs."""

import os
import subprocess
import sys
from pathlib import Path

import streams
from streams.bench.pipeline import _same_code


def test_the_worker_imports_this_streams_even_from_a_directory_holding_another(tmp_path):
    # A `git worktree` of an older commit, the directory a comparison is started from: a
    # child started with `-m` there would import its streams, not the benchmark's.
    (tmp_path / "streams").mkdir()
    (tmp_path / "streams" / "__init__.py").write_text("")
    show = "import streams; print(streams.__file__)"

    def child(env: dict[str, str]) -> Path:
        out = subprocess.run([sys.executable, "-c", show], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout
        return Path(out.strip()).resolve()

    assert child(dict(os.environ)) == tmp_path / "streams" / "__init__.py"
    assert child({**os.environ, **_same_code()}) == Path(streams.__file__).resolve()

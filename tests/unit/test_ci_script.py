"""CI must not be flaky: no pipe into ``head`` (or another early reader) under pipefail,
where the writer dies of SIGPIPE when the reader exits first."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_no_early_closing_pipe_under_pipefail():
    for path in (ROOT / ".ci" / "run", ROOT / "Makefile"):
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"\|\s*(head|grep -q|grep -m)\b", code), f"{path.name}:{number}: {line.strip()}"
    assert "pipefail" in (ROOT / ".ci" / "run").read_text()

"""Progress bars draw on a terminal only: a log file gets no carriage-return soup (issue 16, item 13)."""

from __future__ import annotations

import io
import sys

import pytest

from tlrec.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal, show, drawn", [(True, True, True), (True, False, False),
                                                   (False, True, False), (False, False, False)])
def test_a_bar_is_drawn_only_on_a_terminal_when_asked(monkeypatch: pytest.MonkeyPatch, terminal: bool, show: bool,
                                                       drawn: bool) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    for _ in progress_bar(range(3), show=show, desc="work", file=stream):
        pass
    assert ("work" in stream.getvalue()) == drawn and ("\r" in stream.getvalue()) == drawn

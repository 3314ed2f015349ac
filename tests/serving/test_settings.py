"""Server settings: defaults that follow the machine."""

from __future__ import annotations

import os

import pytest

from tlrec.serving.settings import Settings


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (8, 7)])
def test_model_threads_leave_a_core_for_the_event_loop(monkeypatch, cores, threads):
    monkeypatch.delenv("TLREC_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert Settings(insecure=True).threads == threads
    monkeypatch.setenv("TLREC_THREADS", "3")
    assert Settings(insecure=True).threads == 3

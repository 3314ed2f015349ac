"""tlrec/ray_cluster.py: one start-up policy for the Ray jobs, ray imported only when called."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from tlrec.ray_cluster import LOCAL, LOCAL_OBJECT_STORE_BYTES, start_ray, stop_ray


@pytest.fixture()
def fake_ray(monkeypatch):
    calls: list[tuple[str, dict]] = []
    ray = types.ModuleType("ray")
    ray.running = False
    ray.is_initialized = lambda: ray.running

    def init(**kwargs):
        calls.append(("init", kwargs))
        ray.running = True

    def shutdown():
        calls.append(("shutdown", {}))
        ray.running = False

    ray.init, ray.shutdown = init, shutdown
    monkeypatch.setitem(sys.modules, "ray", ray)
    return ray, calls


@pytest.mark.parametrize("address", [LOCAL, None])
def test_local_start_caps_the_object_store_and_stops_what_it_started(fake_ray, address):
    ray, calls = fake_ray
    started = start_ray(address)
    assert started is True
    (name, kwargs), = calls
    assert name == "init" and kwargs["object_store_memory"] == LOCAL_OBJECT_STORE_BYTES
    assert kwargs["include_dashboard"] is False and "address" not in kwargs
    stop_ray(started)
    assert calls[-1][0] == "shutdown" and not ray.running


def test_a_cluster_address_is_joined_with_its_own_object_store(fake_ray):
    _, calls = fake_ray
    assert start_ray("ray://head:10001") is True
    assert calls == [("init", {"address": "ray://head:10001", "logging_level": 30})]


def test_a_running_ray_is_used_as_is_and_left_running(fake_ray):
    ray, calls = fake_ray
    ray.running = True
    started = start_ray(LOCAL)
    stop_ray(started)
    assert started is False and calls == [] and ray.running


def test_importing_tlrec_and_the_base_layer_does_not_import_ray():
    code = ("import sys, tlrec, tlrec.ray_cluster, tlrec.tables, tlrec.files, tlrec.errors\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)

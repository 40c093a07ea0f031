"""How ``broadcast worker`` sizes and places its processes (worker/runtime/launch.py); the processes
themselves, pinned as said here, are in test_processes.py."""

from __future__ import annotations

import os

import pytest

from worker.runtime.launch import celery_argv, cores_for, processes_for, usable_cpus
from worker.settings import Settings


def test_by_default_one_process_per_usable_core_each_pinned_to_its_own() -> None:
    cpus = usable_cpus()
    assert cpus == sorted(os.sched_getaffinity(0))
    count = processes_for(Settings(), [])
    assert count == len(cpus)
    assert cores_for(count, Settings()) == cpus


def test_more_processes_than_cores_share_them_in_turn() -> None:
    cpus = usable_cpus()
    cores = cores_for(2 * len(cpus) + 1, Settings(worker_processes=2 * len(cpus) + 1))
    assert cores == [*cpus, *cpus, cpus[0]]


def test_pinning_off_leaves_every_process_to_the_kernel() -> None:
    assert cores_for(3, Settings(worker_pin_cpus=False)) == [None, None, None]


@pytest.mark.parametrize(
    "given",
    [["-P", "prefork"], ["-c", "4"], ["-n", "me@%h"], ["--concurrency=8"], ["--pool", "solo"],
     ["-c4"], ["-nsolo@%h"], ["-Pprefork"], ["--hostname=me@%h"], ["-Ec4"], ["-EBnme@%h"]],
)  # fmt: skip
def test_a_pool_size_or_name_given_runs_one_process_as_given(given: list[str]) -> None:
    assert processes_for(Settings(worker_processes=4), given) == 1


@pytest.mark.parametrize(
    "given", [["-Q", "other"], ["-Qcelery"], ["--loglevel", "info"], ["-E"], ["-lINFO"], ["--without-gossip"]]
)
def test_other_celery_options_keep_the_default_processes(given: list[str]) -> None:
    assert processes_for(Settings(worker_processes=3), given) == 3


def test_another_pool_keeps_celerys_own_size_and_the_threads_pool_gets_the_concurrency() -> None:
    settings = Settings(worker_concurrency=300)
    assert celery_argv(settings, ["-P", "prefork"])[-2:] == ["-P", "prefork"]
    assert "-c" not in celery_argv(settings, ["-Pprefork"])  # not a pool of 300 processes
    assert celery_argv(settings, [])[-4:] == ["-P", "threads", "-c", "300"]
    assert celery_argv(settings, ["-c", "8"])[-4:] == ["-P", "threads", "-c", "8"]

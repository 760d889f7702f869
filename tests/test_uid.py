"""`tukio.utils.new_uid`: uuid4-shaped ids, unique in a process, across forks and processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest

from tukio import utils
from tukio.utils import new_uid


def check_uuid4(value: str) -> None:
    parsed = uuid.UUID(value)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value  # lower-case, dashed: the format of str(uuid.uuid4())


def test_new_uid_is_a_uuid4_string() -> None:
    for _ in range(100):
        check_uuid4(new_uid())


def test_new_uid_never_repeats_in_a_process() -> None:
    ids = [new_uid() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_new_uid_draws_a_new_prefix_once_the_counter_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    before = new_uid()
    # the counter at its last value: the next id is the last of this prefix
    monkeypatch.setattr(utils, "_uid_count", iter([utils._UID_LIMIT - 1, utils._UID_LIMIT]))
    last = new_uid()
    assert last[:24] == before[:24]
    assert last.endswith("ffffffffffff")
    after = new_uid()  # the counter is spent: a new prefix, counting from 0
    check_uuid4(after)
    assert after[:24] != before[:24]
    assert after.endswith("000000000000")
    assert len({before, last, after, new_uid()}) == 4


def test_new_uid_is_unique_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=lambda ids=ids: ids.extend(new_uid() for _ in range(2_000))) for ids in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [uid for ids in out for uid in ids]
    assert len(ids) == 8_000
    assert len(set(ids)) == 8_000


# Forked in a fresh interpreter: forking the test process (threads may be alive) could deadlock.
FORK = """
import os
from tukio.utils import new_uid
new_uid()  # the parent has drawn its prefix
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, new_uid().encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as f:
    child = f.read()
os.waitpid(pid, 0)
print(child, new_uid())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True, timeout=60, check=True)
    child, parent = out.stdout.split()
    check_uuid4(child)
    check_uuid4(parent)
    assert child[:24] != parent[:24]


def test_two_processes_draw_different_prefixes() -> None:
    code = "from tukio.utils import new_uid; print(new_uid())"
    ids = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    for uid in ids:
        check_uuid4(uid)
    assert ids[0][:24] != ids[1][:24]

"""core/failure_memory.py: the one backoff-with-memory that definition fetches and provider logins share."""
from __future__ import annotations

import time

import pytest

from formrelay.core.errors import TryLater
from formrelay.core.failure_memory import FailureMemory


def test_a_failure_is_raised_again_at_once_then_forgotten_after_its_pause():
    memory = FailureMemory(0.05, 1.0)
    memory.raise_if_remembered()  # nothing yet
    assert memory.remember(TryLater("down")) == 0.05
    with pytest.raises(TryLater, match="down") as first:
        memory.raise_if_remembered()
    with pytest.raises(TryLater) as second:
        memory.raise_if_remembered()
    assert first.value is not second.value  # a copy each time: threads raise it at once
    time.sleep(0.06)
    memory.raise_if_remembered()


def test_the_pause_doubles_up_to_the_cap_and_a_success_starts_over():
    memory = FailureMemory(5.0, 60.0)
    assert [memory.remember(RuntimeError("x")) for _ in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    memory.forget()
    memory.raise_if_remembered()
    assert memory.remember(RuntimeError("x")) == 5.0


def test_a_refused_login_and_a_failed_definition_use_it(tmp_path):
    from formrelay.delivery.form import FAILURE_MEMORY, FAILURE_MEMORY_MAX
    from formrelay.providers.base import SharedToken

    token = SharedToken("p", "id", lambda: (_ for _ in ()).throw(TryLater("refused")), lambda lifetime: 0.0)
    with pytest.raises(TryLater):
        token.get()
    assert isinstance(token.failed, FailureMemory) and token.failed.failures == 1
    with pytest.raises(TryLater):
        token.get()  # remembered: not asked again
    assert token.failed.failures == 1 and (token.failed.first, token.failed.cap) == (5.0, 300.0)
    assert (FAILURE_MEMORY, FAILURE_MEMORY_MAX) == (5.0, 60.0)

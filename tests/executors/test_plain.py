"""A user's executor with only ``submit`` and ``shutdown``: the conformance suite holds.

`concurrent.futures.ThreadPoolExecutor` stands for it: it declares no
`Capabilities`, so the driver treats it as a plain executor, sending each
attempt in picklable form and counting timeouts from submission.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.executors.conformance import ExecutorTests


@pytest.fixture(scope="module")
def stdlib_pool() -> Iterator[ThreadPoolExecutor]:
    # Room for attempts abandoned on timeout, which keep their threads.
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


class TestPlainExecutor(ExecutorTests):
    remote = True  # attempts are pickled, as for another process

    @pytest.fixture
    def executor(self, stdlib_pool: ThreadPoolExecutor) -> Any:
        return stdlib_pool

"""The service's commit bookkeeping: what /readyz calls uncommitted, failed commits retried."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from detector.stream.offsets import Pending
from detector.stream.service import DetectorService, commit_overdue_s
from tests.unit.conftest import small_settings

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


class Done:
    """A send future the broker acknowledged."""

    is_done = True

    def failed(self) -> bool:
        return False


class CommitLog:
    """A fetcher that records commits; their outcomes are released by the test."""

    def __init__(self) -> None:
        self.commits: list[tuple[dict[TopicPartition, int], bool]] = []
        self.results: list[tuple[int, str | None]] = []

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        self.commits.append((dict(offsets), sync))
        return len(self.commits)

    def commit_results(self) -> list[tuple[int, str | None]]:
        out, self.results = self.results, []
        return out


def service_with(fetcher: CommitLog, tmp_path: Any) -> DetectorService:
    settings = small_settings(
        kafka={"commit_interval_ms": 0}, registry={"path": str(tmp_path / "models")}
    )
    service = DetectorService(settings)
    service.commits.fetcher = fetcher  # type: ignore[assignment]
    return service


def test_processed_work_counts_as_uncommitted_until_the_broker_confirms(tmp_path) -> None:
    # Given a processed batch whose sends are acknowledged
    fetcher = CommitLog()
    service = service_with(fetcher, tmp_path)
    service.offsets.pending.append(Pending({TP0: 10}, [Done()]))
    since = service.offsets.pending[0].processed_at

    # When the loop commits it asynchronously
    service.commits.ready()
    # Then the commit went out, and the work stays uncommitted for /readyz until answered
    assert fetcher.commits == [({TP0: 10}, False)]
    assert service.health.uncommitted_since == since
    # When the broker confirms it, Then nothing is uncommitted any more
    fetcher.results.append((1, None))
    service.commits.ready()
    assert service.health.uncommitted_since is None


def test_a_failed_commit_is_retried_with_the_next_and_never_moves_backwards(tmp_path) -> None:
    # Given two commits in flight: {p0: 10} then {p0: 20, p1: 5}
    fetcher = CommitLog()
    service = service_with(fetcher, tmp_path)
    service.offsets.pending.append(Pending({TP0: 10}, [Done()]))
    service.commits.ready()
    service.offsets.pending.append(Pending({TP0: 20, TP1: 5}, [Done()]))
    service.commits.ready()
    assert [c for c, _ in fetcher.commits] == [{TP0: 10}, {TP0: 20, TP1: 5}]

    # When the second fails and then the first fails
    fetcher.results += [(2, "KafkaConnectionError: refused"), (1, "KafkaConnectionError: refused")]
    service.commits.retry_now()  # the retry pause is not what this test is about
    service.commits.take_results()
    service.commits.retry_now()
    service.commits.ready()

    # Then one retry carries the newest offsets: p0 at 20 (never 10 again), p1 at 5
    assert fetcher.commits[-1] == ({TP0: 20, TP1: 5}, False)
    assert len(fetcher.commits) == 3
    # ...and until that retry is confirmed the work counts as uncommitted
    assert service.health.uncommitted_since is not None


def test_overdue_is_the_commit_interval_plus_the_request_timeout() -> None:
    settings = small_settings(kafka={"commit_interval_ms": 250, "request_timeout_ms": 4000})
    assert commit_overdue_s(settings) == 4.25


class Unanswered:
    """A send the client never answers; ``get`` fails as a client's timeout does, or is
    answered during the wait when ``answer_on_wait``."""

    def __init__(self, answer_on_wait: bool = False) -> None:
        self.is_done = False
        self.answer_on_wait = answer_on_wait
        self.waited: list[float | None] = []

    def failed(self) -> bool:
        return False

    def get(self, timeout: float | None = None) -> None:
        self.waited.append(timeout)
        if not self.answer_on_wait:
            raise KafkaTimeoutError(f"not acknowledged within {timeout} s")
        self.is_done = True


@pytest.mark.parametrize("answered", [False, True], ids=["never_answered", "answered_late"])
def test_a_send_unanswered_past_the_request_timeout_ends_the_session(
    tmp_path, answered: bool
) -> None:
    # Given a batch processed longer ago than kafka.request_timeout_ms, its send unanswered
    fetcher = CommitLog()
    service = service_with(fetcher, tmp_path)
    timeout_s = service.settings.kafka.request_timeout_ms / 1000.0
    send = Unanswered(answer_on_wait=answered)
    service.offsets.pending.append(Pending({TP0: 10}, [send], time.monotonic() - timeout_s - 1))
    if not answered:
        # When the loop turns, Then it waits one more timeout and gives up on the session
        with pytest.raises(KafkaTimeoutError):
            service.commits.ready()
        assert send.waited == [timeout_s] and fetcher.commits == []
    else:
        # When the answer comes during that wait, Then the batch is committed as usual
        service.commits.ready()
        assert send.waited == [timeout_s] and fetcher.commits == [({TP0: 10}, False)]


def test_a_recent_unanswered_send_is_left_to_the_client(tmp_path) -> None:
    # Given a batch processed just now, its send not answered yet
    fetcher = CommitLog()
    service = service_with(fetcher, tmp_path)
    send = Unanswered()
    service.offsets.pending.append(Pending({TP0: 10}, [send]))
    # When the loop turns, Then it neither waits nor commits
    service.commits.ready()
    assert send.waited == [] and fetcher.commits == []

"""The service's commit bookkeeping: what /readyz calls uncommitted, failed commits retried."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

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

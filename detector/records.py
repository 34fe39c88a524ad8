"""What a batch of records is to the pipeline: flat columns, whatever client read them.

Its own module, free of the model stack: the kafka-python fetch process
(``detector.stream.fetch_process``) imports the fetcher, which names this protocol, and
must not load numpy, scikit-learn and scipy for that (90 MB and 1.5 s at every start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Records(Protocol):
    """A batch of records as flat columns (``detector.stream.fetcher.RecordBatch`` is one)."""

    # Read-only: a transport may read a column only when it is first asked for.
    @property
    def topics(self) -> Sequence[str]: ...
    @property
    def partitions(self) -> Sequence[int]: ...
    @property
    def offsets(self) -> Sequence[int]: ...
    @property
    def timestamps_ms(self) -> Sequence[int]: ...
    @property
    def keys(self) -> Sequence[bytes | None]: ...
    @property
    def values(self) -> list[bytes | None]: ...

    def __len__(self) -> int: ...

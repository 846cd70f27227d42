"""RecordWriter(background=True): the event loop hands each turn's records to a writer thread, so a
write that blocks (dirty-page throttling, a slow disk) stalls the thread, not the loop that reads
the sockets; everything handed over is written in order, and a failed write reaches on_error
through the loop. Deterministic: the blocking file waits on an Event, nothing is timed."""

import asyncio
import errno
import json
import threading

from servesweep.loadgen.records import RecordWriter, RequestRecord, describe_dropped, read_records


def _record(i: int) -> RequestRecord:
    return RequestRecord(request_id=i, level="c1", warmup=False, scheduled_s=float(i), sent_s=float(i),
                         wire_s=float(i), end_s=float(i) + 1.0)


class BlockingFile:
    """Writes wait until `go` is set (as a write the kernel throttles does)."""

    def __init__(self, inner) -> None:
        self.inner, self.go, self.writes = inner, threading.Event(), 0

    def write(self, data):
        self.go.wait()
        self.writes += 1
        return self.inner.write(data)

    def flush(self):
        self.inner.flush()

    @property
    def closed(self):
        return self.inner.closed

    def close(self):
        self.inner.close()


def test_a_blocked_write_does_not_hold_the_loop_and_nothing_is_lost(tmp_path):
    files = []

    class Writer(RecordWriter):
        def _open(self, path):
            files.append(BlockingFile(super()._open(path)))
            return files[0]

    writer = Writer(tmp_path / "records.jsonl", background=True)

    async def main() -> int:
        turns = 0
        for i in range(50):
            writer.write(_record(i))
            await asyncio.sleep(0)  # the loop goes on turning while the thread waits in write()
            turns += 1
        return turns

    assert asyncio.run(main()) == 50
    assert files[0].writes == 0  # every write is still blocked, yet the loop ran all its turns
    files[0].go.set()
    writer.close()
    ids = [r.request_id for r in read_records(tmp_path / "records.jsonl")]
    assert ids == list(range(50)) and writer.count == 50 and writer.error is None


def test_a_failed_background_write_reaches_on_error_through_the_loop_and_later_records_are_dropped(tmp_path):
    class Full:
        def __init__(self, inner):
            self.inner = inner

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        @property
        def closed(self):
            return self.inner.closed

        def close(self):
            self.inner.close()

    class Writer(RecordWriter):
        def _open(self, path):
            return Full(super()._open(path))

    heard = []

    async def main() -> None:
        writer = Writer(tmp_path / "records.jsonl", background=True)
        loop_thread = threading.get_ident()
        writer.on_error = lambda exc: heard.append((exc.errno, threading.get_ident() == loop_thread))
        writer.write(_record(0))
        while not heard:
            await asyncio.sleep(0.01)
        writer.write(_record(1))  # after the error: dropped, not raised
        writer.close()
        assert "No space left on device" in writer.describe_error()

    asyncio.run(main())
    assert heard == [(errno.ENOSPC, True)]


def test_without_a_loop_the_background_writer_still_writes_everything(tmp_path):
    writer = RecordWriter(tmp_path / "r.jsonl", background=True)
    for i in range(3):
        writer.write(_record(i))
    writer.close()
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [0, 1, 2]


def test_a_stalled_disk_does_not_grow_memory_past_the_bound_and_every_left_out_record_is_counted(tmp_path):
    """The lines waiting for the writer thread are bounded: once the bound is reached a turn's
    lines are dropped and counted, never queued without limit (issue 36)."""
    files = []

    class Writer(RecordWriter):
        def _open(self, path):
            files.append(BlockingFile(super()._open(path)))
            return files[0]

    line = len(_record(0).encode())
    assert all(len(_record(i).encode()) == line for i in range(9))  # so exactly three fit
    writer = Writer(tmp_path / "records.jsonl", background=True, max_pending_bytes=3 * line)

    async def main() -> list[int]:
        waiting = []
        for i in range(9):  # one record a loop turn; the disk takes none of them
            writer.write(_record(i))
            await asyncio.sleep(0)
            waiting.append(writer._pending_bytes)
        return waiting

    waiting = asyncio.run(main())
    assert max(waiting) == 3 * line and writer.dropped == 6 and writer.count == 9
    files[0].go.set()
    writer.close()
    assert [r.request_id for r in read_records(tmp_path / "records.jsonl")] == [0, 1, 2]
    assert writer._pending_bytes == 0 and writer.bytes_written == 3 * line
    assert describe_dropped(writer.dropped).startswith("6 records were left out")


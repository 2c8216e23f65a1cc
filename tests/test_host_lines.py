"""Host output is batched into few log records, live, with every line and its host kept."""

import threading
import time

from tasks.node_step import HostLines


class Recorder:
    def __init__(self):
        self.records: list[tuple[float, str]] = []
        self.t0 = time.monotonic()

    def info(self, msg, *args):
        assert not args  # a record is preformatted: '%' in host output must stay as it is
        self.records.append((time.monotonic() - self.t0, msg))


def test_lines_of_many_hosts_become_few_records_in_order_per_host():
    log = Recorder()
    lines = HostLines(log, batch_s=0.3)

    def host(i):
        for n in range(20):
            lines.add(f"n{i:03d}", f"line {n} 100% done")

    threads = [threading.Thread(target=host, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines.close()
    sent = [line for _, msg in log.records for line in msg.split("\n")]
    assert len(sent) == 1000 and len(log.records) <= 5
    for i in range(50):
        mine = [s for s in sent if s.startswith(f"[n{i:03d}] ")]
        assert mine == [f"[n{i:03d}] line {n} 100% done" for n in range(20)]


def test_output_is_sent_while_the_step_runs_and_big_batches_are_split():
    log = Recorder()
    lines = HostLines(log, batch_s=0.2, max_lines=10)
    lines.add("n1", "early")
    time.sleep(0.5)
    assert [msg for _, msg in log.records] == ["[n1] early"]  # live: not held until the end
    for n in range(25):
        lines.add("n2", str(n))
    lines.close()
    assert [msg.count("\n") + 1 for _, msg in log.records] == [1, 10, 10, 5]
    lines.close()  # closing twice sends nothing more
    assert len(log.records) == 4

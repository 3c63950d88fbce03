"""The staging test's service process: its stderr is drained while it runs, so a chatty child
never blocks on a full pipe, and the tail is kept for the error message."""

import subprocess
import sys

from fraudloop.delivery.staging import StderrTail

CHATTY = """
import sys
for i in range(20000):
    sys.stderr.write(f"log line {i:05d} " + "x" * 40 + "\\n")
sys.stderr.write("final: the reason it failed\\n")
sys.exit(3)
"""


def test_a_child_writing_a_megabyte_to_stderr_runs_to_its_end():
    proc = subprocess.Popen([sys.executable, "-c", CHATTY], stderr=subprocess.PIPE)
    tail = StderrTail(proc.stderr, limit=500)
    try:
        assert proc.wait(timeout=60) == 3  # an undrained 64 KiB pipe blocks it for ever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = tail.text(wait=10)
    assert text.endswith("final: the reason it failed\n")
    assert "log line 19999" in text and "log line 00000" not in text
    assert len(text) <= 500


def test_tail_of_a_quiet_child_is_empty_and_the_pipe_is_closed():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE)
    tail = StderrTail(proc.stderr)
    proc.wait(timeout=60)
    assert tail.text(wait=10) == ""
    assert proc.stderr.closed

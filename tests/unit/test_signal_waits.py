"""Ctrl-C and SIGTERM reach a waiting main thread even when the kernel delivers them to
another thread of the process (it may pick any thread that does not block the signal).

Python runs a signal's handler in the main thread only, between bytecodes; a main thread
blocked in an untimed wait is not woken by a signal another thread received. The demo
with its desk once ignored Ctrl-C for 120 s that way (CI, test_cli_e2e), and a node or
coordinator waiting in ``serve_until_signalled`` would ignore SIGTERM alike. Each case runs
in its own interpreter, with the signal sent to a helper thread (``pthread_kill``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

_SCRIPTS = {
    "demo desk": """
        from fedmatch.demo.desk import _wait_for_interrupt
        try:
            _wait_for_interrupt()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """,
    "party server": """
        from fedmatch.ops.serving import serve_until_signalled

        class Server:
            def stop(self, grace):
                print("stopped", grace, flush=True)

        serve_until_signalled(Server(), grace=0.0)
    """,
}

_HELPER = """
    import signal, threading, time

    def deliver():
        time.sleep(0.5)  # the main thread is waiting by then
        signal.pthread_kill(threading.get_ident(), signal.{signal})

    threading.Thread(target=deliver, daemon=True).start()
"""


def _as_at_a_terminal() -> None:
    # Ctrl-C's default action, as a shell gives a foreground command: a test run started in
    # the background without job control inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("case", "sig", "expected"),
    [("demo desk", "SIGINT", "interrupted"), ("party server", "SIGINT", "stopped 0.0"),
     ("party server", "SIGTERM", "stopped 0.0")],
)  # fmt: skip
def test_a_signal_another_thread_receives_ends_the_wait(case: str, sig: str, expected: str) -> None:
    code = textwrap.dedent(_HELPER.format(signal=sig)) + textwrap.dedent(_SCRIPTS[case])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False,
        preexec_fn=_as_at_a_terminal,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected

"""The log as `web.logs` writes it: one JSON object per line on stderr, the ledger's own lines
(structlog) and the libraries' (`logging`) alike, never interleaved, however many threads log
at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

THREADS = 8
LINES_EACH = 200

# Long lines (past a pipe's atomic write size and the stream's buffer), from many threads at
# once, half through structlog and half through `logging`, each with its request's context.
SCRIPT = textwrap.dedent(
    f"""
    import logging, threading
    import structlog
    from web.logs import configure_logging

    configure_logging(process_id=4242)
    ours = structlog.get_logger("ledger.tests")
    theirs = logging.getLogger("some.library")
    padding = "x" * 9000

    def write(n):
        structlog.contextvars.bind_contextvars(request_id=f"req-{{n}}")
        for i in range({LINES_EACH}):
            ours.info("ours", n=n, i=i, padding=padding)
            ours.debug("below the level", n=n)
            theirs.info("theirs %d %d %s", n, i, padding)

    threads = [threading.Thread(target=write, args=(n,)) for n in range({THREADS})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    structlog.get_logger("ledger.tests").warning("with %s", "arguments")
    logging.getLogger("stripe").info("the SDK's request line")
    logging.getLogger("stripe").warning("the SDK's warning")
    """
)


def test_every_line_is_one_whole_json_object_with_its_fields() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # each line whole JSON
    ours = [line for line in lines if line["event"] == "ours"]
    theirs = [line for line in lines if line["event"].startswith("theirs ")]
    assert len(ours) == len(theirs) == THREADS * LINES_EACH
    assert not [line for line in lines if line["event"] == "below the level"]
    for line in ours:
        assert line["logger"] == "ledger.tests"
        assert line["level"] == "info"
        assert line["request_id"] == f"req-{line['n']}"
        assert line["pid"] == 4242
        assert line["timestamp"].endswith("Z")
    for line in theirs:
        _, n, _, _ = line["event"].split(" ")
        assert line["logger"] == "some.library"
        assert line["level"] == "info"
        assert line["request_id"] == f"req-{n}"
        assert line["pid"] == 4242
    rest = [(line["logger"], line["level"], line["event"]) for line in lines[-2:]]
    # The stripe SDK's INFO lines (two per API call) are not written; its warnings are.
    assert rest == [
        ("ledger.tests", "warning", "with arguments"),
        ("stripe", "warning", "the SDK's warning"),
    ]

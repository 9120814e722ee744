"""``forkwire demo``: the same readings over TCP and over UDP, and exactly what each lost.

For every offered rate and both transports one sender streams ``count`` readings of one
sensor (seqs ``0..count-1``), paced in small bursts. TCP sends acked ``readings`` frames
through a bounded window, so TCP's flow control holds the sender back and nothing is lost;
UDP sends one fire-and-forget ``reading`` per datagram, so whatever the receiver cannot
take is dropped. After each run the demo waits until the server has stored everything it
will store, reads back what it stored (the ``series`` request, so an external server is
measured the same way as the demo's own), and counts, from the seqs:

- ``lost = sent - stored`` exactly, where ``sent`` counts every seq the sender issued
  (a reading the noise stage dropped keeps its seq, so the consumer sees the gap);
- ``out_of_order``: stored readings whose arrival (the commit that stored them,
  ``received_at``; within one commit, seq order) comes after a higher seq;
- ``duplicates``: the server's ``readings_duplicate`` counter over the run;
- latency ``received_at - ts`` (p50, p99) and RFC 3550 interarrival jitter over the same
  transit times. ``ts`` is the client's send time and ``received_at`` is the time the
  server handed the reading's group-commit batch to storage, both on this machine's clock,
  so latency includes the wait for the commit (up to the server's commit interval, 50 ms
  by default);
- ``kernel_drops`` (UDP only): the growth of the kernel's ``RcvbufErrors`` counter, which
  is host-wide, so other programs' drops during the run count too.

Every lost reading is attributed: to the noise stage (counted by the client), to the
kernel's receive buffer (``kernel_drops``, capped at what is left), or elsewhere.
"""

from forkwire.client.demo.config import (
    DEFAULT_COUNT,
    DEFAULT_NOISE,
    DEFAULT_NOISE_RATE,
    DEFAULT_NOISE_SECONDS,
    DEFAULT_RATES,
    DEFAULT_TCP_BATCH,
    DEFAULT_TCP_WINDOW,
    QUICK_COUNT,
    QUICK_NOISE_SECONDS,
    QUICK_RATES,
    REFERENCE_LABEL,
    DemoConfig,
    DemoError,
)
from forkwire.client.demo.iperf import _iperf_run
from forkwire.client.demo.metrics import (
    Rate,
    attribute_loss,
    count_out_of_order,
    parse_rates,
    percentile,
    rfc3550_jitter,
)
from forkwire.client.demo.plot import plot_demo
from forkwire.client.demo.results import DemoResult, RunResult
from forkwire.client.demo.run import run_demo, run_demo_sync
from forkwire.client.demo.table import print_table, render_table

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_NOISE",
    "DEFAULT_NOISE_RATE",
    "DEFAULT_NOISE_SECONDS",
    "DEFAULT_RATES",
    "DEFAULT_TCP_BATCH",
    "DEFAULT_TCP_WINDOW",
    "QUICK_COUNT",
    "QUICK_NOISE_SECONDS",
    "QUICK_RATES",
    "REFERENCE_LABEL",
    "DemoConfig",
    "DemoError",
    "DemoResult",
    "Rate",
    "RunResult",
    "_iperf_run",  # the tests run one iperf3 measurement on its own
    "attribute_loss",
    "count_out_of_order",
    "parse_rates",
    "percentile",
    "plot_demo",
    "print_table",
    "render_table",
    "rfc3550_jitter",
    "run_demo",
    "run_demo_sync",
]

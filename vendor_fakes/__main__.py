"""Run the fake vendors until interrupted:
``python -m vendor_fakes [--port-file F] [--no-tls] [--latency-ms 50]``.

Prints (and writes to ``--port-file``, atomically) ``{"env": {...}, "control": {...}}``; export
``env`` to point Hookline at the fakes, and use ``control`` with `vendor_fakes.RemoteFake`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from vendor_fakes import FakeVendors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vendor_fakes", description=__doc__)
    parser.add_argument("--port-file", type=Path, help="write the env/control JSON here")
    parser.add_argument(
        "--no-tls",
        action="store_true",
        help="plain HTTP (pysnc and simple-salesforce need HTTPS: only Slack/inventory/echo work)",
    )
    parser.add_argument("--ca-dir", type=Path, help="where to write the CA certificate")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="every vendor call answers after this many ms (a SaaS API's latency; default 0)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeVendors(
        tls=not args.no_tls, ca_dir=args.ca_dir, latency=args.latency_ms / 1000
    ) as fakes:
        info = json.dumps({"env": fakes.env, "control": fakes.control}, indent=2)
        if args.port_file is not None:
            tmp = args.port_file.with_name(args.port_file.name + ".tmp")
            tmp.write_text(info, encoding="utf-8")
            os.replace(tmp, args.port_file)
        print(info, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

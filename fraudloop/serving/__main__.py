"""``python -m fraudloop.serving``: run the scoring service (the container's entry point).

Also reachable as ``fraudloop serve``. Uvicorn handles SIGTERM / SIGINT gracefully: it stops
accepting, finishes in-flight requests, then the app's shutdown drains the off-path queue and
flushes the prediction log. Connections are guarded (request-head deadline, keep-alive timeout:
:mod:`fraudloop.serving.guards`), and the S3 client gets short connect/read timeouts, so a slow
client or a hung store cannot hold the service.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="fraudloop serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    parser.add_argument(
        "--package-dir", help="serve this exported package only (no alias following)"
    )
    parser.add_argument(
        "--version", type=int, help="serve this registry version's package as production only"
    )
    parser.add_argument(
        "--features-prefix", help="online feature state prefix (default featurestore/online)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn and service log level",
    )
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fraudloop.core.settings import Settings
    from fraudloop.serving.app import create_app
    from fraudloop.serving.config import ServeConfig

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    config = ServeConfig.from_env(
        model_name=settings.model_name,
        package_dir=args.package_dir,
        pin_version=args.version,
        features_prefix=args.features_prefix,
    )
    # The batch worker thread and the event loop share the GIL: at Python's default 5 ms switch
    # interval each of the many GIL hand-offs of a single request waits up to 5 ms behind a batch
    sys.setswitchinterval(config.gil_switch_ms / 1000)
    store = open_store(settings, config.store_timeout_seconds)
    app = create_app(store, config)
    uvicorn.run(
        app, **server_options(config), host=args.host, port=args.port, log_level=args.log_level
    )
    return 0


def server_options(config) -> dict:
    """uvicorn options of the service (the tests' in-thread servers use the same)."""
    from fraudloop.serving.guards import header_deadline_protocol

    return {
        "http": header_deadline_protocol(config.header_timeout_seconds),
        "timeout_keep_alive": config.keep_alive_seconds,
        "access_log": False,  # the prediction log is the record of every decision
        "timeout_graceful_shutdown": 30,
    }


def open_store(settings, timeout: float):
    """The settings' store, with the service's own S3 timeout and two attempts: a store that
    hangs fails a sync quickly (readiness reports it) instead of holding a thread."""
    from dataclasses import replace

    return replace(settings, s3_timeout_seconds=timeout, s3_max_attempts=2).open_store()


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m fraudloop.serving``: run the scoring service (the container's entry point).

Also reachable as ``fraudloop serve``. Uvicorn handles SIGTERM / SIGINT gracefully: it stops
accepting, finishes in-flight requests, then the app's shutdown drains the off-path queue and
flushes the prediction log.
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
    store = settings.open_store()
    app = create_app(store, config)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # the prediction log is the record of every decision
        timeout_graceful_shutdown=30,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

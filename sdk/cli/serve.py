"""``chromaforge serve``: the HTTP service with dynamic batching and a browser page (the serve extra)."""

from __future__ import annotations

import argparse

from sdk.cli import _args
from sdk.errors import BackendUnavailableError, install_hint

NAME = "serve"
EXAMPLES = (
    "chromaforge serve --port 8000                        # then open http://127.0.0.1:8000/",
    "chromaforge serve --host 0.0.0.0 --max-batch 16 --no-access-log",
    "chromaforge serve --max-memory 2G                    # requests wait for memory, or get 503 with Retry-After",
    "chromaforge serve --model-dir my-model --backend onnxruntime-cuda",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = _args.add_command(sub, NAME, "HTTP service with dynamic batching and a browser page (the serve extra)", EXAMPLES,
                          parents=[common])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N", help="most images per generator call (default 8; 1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="longest an image waits for others to join its batch (default 5)")
    p.add_argument("--queue", type=int, default=64, metavar="N",
                   help="most images waiting for a batch, and most requests waiting for memory; more get 503 with Retry-After (default 64)")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S", help="a request not answered by then gets 504 (default 30)")
    p.add_argument("--max-body-mb", type=float, default=64.0, metavar="MB", help="refuse larger request bodies with 413 (default 64)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory requests may reserve in all, e.g. 2G or 512M; a request waits for its share, or gets 503 "
                        "(default: half the cgroup memory limit, else of the RAM)")
    p.add_argument("--read-timeout-s", type=float, default=10.0, metavar="S",
                   help="a request's line and headers, then its body, must arrive within this (default 10)")
    p.add_argument("--keep-alive-s", type=float, default=5.0, metavar="S", help="close idle keep-alive connections after this (default 5)")
    p.add_argument("--max-connections", type=int, default=512, metavar="N",
                   help="most open connections; more get 503 and are closed (default 512)")
    p.add_argument("--keep-alive-requests", type=int, default=1000, metavar="N",
                   help="most requests on one connection, then it is closed (default 1000; 0: no limit)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="one line per request on stderr")
    return p


def run(args: argparse.Namespace) -> int:
    """Check the options, then run the service until SIGTERM / Ctrl-C."""
    try:
        from sdk.serve.admission import parse_bytes
        from sdk.serve.app import ServeConfig, serve
    except ImportError as e:
        raise BackendUnavailableError(f"chromaforge serve needs the serve extra ({e}); install it with {install_hint('serve')}") from e
    config = ServeConfig(host=args.host, port=args.port, model_dir=args.model_dir, backend=args.backend, threads=args.threads,
                         precision=args.precision, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue=args.queue,
                         max_pixels=_args.pixel_limit(args), max_body_mb=args.max_body_mb, timeout_s=args.timeout_s,
                         max_memory=None if args.max_memory is None else parse_bytes(args.max_memory),
                         read_timeout_s=args.read_timeout_s, keep_alive_s=args.keep_alive_s, max_connections=args.max_connections,
                         keep_alive_requests=args.keep_alive_requests)
    return serve(config, access_log=args.access_log)

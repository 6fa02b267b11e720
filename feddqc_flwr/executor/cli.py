"""`feddqc-executor`: the resident ClientApp executor of one SuperNode (`--isolation process`).

    flower-supernode --isolation process --port 9094 ... &
    feddqc-executor --insecure --runtime-api-address 127.0.0.1:9094 --restart

Plain HTTP is only allowed to a loopback address: the Runtime API hands out every message and
the FAB, so over a network it needs TLS (`--root-certificates`) and the SuperExec auth secret.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import sys
import time

from feddqc_flwr.executor.supervisor import EXIT_REFUSED, supervise
from feddqc_flwr.executor.versions import UnsupportedFlwr, check_flwr


def is_loopback(address: str) -> bool:
    """Whether `host:port` (or `[v6]:port`) names this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PRELOAD = "torch,transformers,peft,datasets"


def preload(modules: str) -> list[str]:
    """Import `modules` (comma-separated) now, while no task waits; returns the ones not installed.

    In a stock SuperNode every message pays these imports (~7 s of a cold ClientApp process on
    2 cores); a resident executor pays them once, and before the first message instead of in it.
    """
    missing = []
    for name in filter(None, (m.strip() for m in modules.split(","))):
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing.append(name)
            print(f"feddqc-executor: --preload {name}: not imported ({err})", file=sys.stderr, flush=True)
        else:
            print(f"feddqc-executor: preloaded {name} in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    return missing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feddqc-executor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-api-address", "--appio-api-address", dest="address", default="127.0.0.1:9094",
                        help="the SuperNode's Runtime API (its --host/--port; default 127.0.0.1:9094)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="plain HTTP (loopback addresses only)")
    tls.add_argument("--root-certificates", help="CA that signed the Runtime API's --ssl-certfile")
    parser.add_argument("--superexec-auth-secret-file",
                        help="the file the SuperNode got as --superexec-auth-secret-file (raw bytes)")
    parser.add_argument("--poll-interval", type=float, default=0.2,
                        help="seconds between task claims when idle (flower-superexec: 1)")
    parser.add_argument("--preload", default=PRELOAD,
                        help=f"modules to import before claiming tasks, comma-separated, '' for none "
                             f"(default {PRELOAD}: the first message would otherwise pay their import)")
    parser.add_argument("--restart", action="store_true",
                        help="run the executor under a restart loop that starts it again when it dies")
    return parser


def _child_args(args: argparse.Namespace) -> list[str]:
    """The same options for the supervised child, without --restart."""
    out = ["--runtime-api-address", args.address, "--poll-interval", str(args.poll_interval),
           "--preload", args.preload]
    out += ["--insecure"] if args.insecure else []
    out += ["--root-certificates", args.root_certificates] if args.root_certificates else []
    out += ["--superexec-auth-secret-file", args.superexec_auth_secret_file] if args.superexec_auth_secret_file else []
    return out


def _refuse(message: str) -> None:
    print(f"feddqc-executor: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_REFUSED)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        check_flwr()
    except UnsupportedFlwr as err:
        _refuse(str(err))
    if args.insecure and not is_loopback(args.address):
        _refuse(f"--insecure to {args.address}: plain HTTP is only allowed to a loopback address; "
                "bind the SuperNode's Runtime API to 127.0.0.1, or give it TLS and use --root-certificates")
    if args.restart:
        sys.exit(supervise(_child_args(args)))
    secret = None
    if args.superexec_auth_secret_file:
        with open(args.superexec_auth_secret_file, "rb") as f:
            secret = f.read()
        if not secret:
            _refuse(f"{args.superexec_auth_secret_file} is empty")
    # Imported after the version check: on an unsupported flwr these imports may be what fails.
    from feddqc_flwr.executor.resident import RuntimeApi, RuntimeApiRefused, serve

    preload(args.preload)

    certificates = None
    if args.root_certificates:
        with open(args.root_certificates, "rb") as f:
            certificates = f.read()
    try:
        serve(RuntimeApi(args.address, certificates, args.insecure, secret), args.poll_interval)
    except RuntimeApiRefused as err:
        _refuse(str(err))

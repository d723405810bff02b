"""The whole stack on one host (`make stack`): Traefik on PORT in front of Gunicorn, the API
public under /api, migrations applied first.

    python ops/stack.py --port 8080 --workers 2

Settings come from the SAAS_* environment (PostgreSQL and Redis URLs in production; the
embedded SQLite database and in-process limiter when unset). Gunicorn listens on a loopback port
of its own that only Traefik uses. Ctrl-C or SIGTERM stops everything this started: Traefik
first, then Gunicorn gracefully (requests in flight finish, usage is committed).

Written by hand because it only starts two processes, waits, and stops them in order; each runs
in a process group of its own, so a Ctrl-C in the terminal reaches this script alone and Gunicorn
gets the SIGTERM of a graceful stop rather than the SIGINT of a quick one.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import httpx

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def traefik_config(directory: Path, port: int) -> Path:
    """The static configuration with the entry point on `port` (Traefik's static file cannot
    read the environment)."""
    static = (HERE / "traefik" / "traefik.yml").read_text()
    static = static.replace('address: "127.0.0.1:8080"', f'address: "127.0.0.1:{port}"')
    dynamic = HERE / "traefik" / "dynamic.yml"
    static = static.replace("filename: dynamic.yml", f"filename: {dynamic}")
    path = directory / "traefik.yml"
    path.write_text(static)
    return path


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise SystemExit("stack: a process exited while starting")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"stack: {url} was not ready after {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="Traefik + Gunicorn on one host.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    upstream = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "SAAS_ROOT_PATH": "/api",
        "SAAS_BIND": upstream,
        "SAAS_WORKERS": str(args.workers),
        "SAAS_FORWARDED_ALLOW_IPS": "127.0.0.1",  # Traefik, on this host
        "SAAS_STACK_UPSTREAM": upstream,
    }
    subprocess.run([BIN / "saas", "bootstrap"], env=env, check=True)  # migrations first

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    graceful = float(os.environ.get("SAAS_GRACEFUL_TIMEOUT", "30"))
    with tempfile.TemporaryDirectory(prefix="saas-stack-") as directory:
        config = traefik_config(Path(directory), args.port)
        gunicorn = subprocess.Popen(
            [BIN / "gunicorn", "--config", HERE / "gunicorn.conf.py"],
            env=env,
            start_new_session=True,
        )
        traefik = subprocess.Popen(
            [BIN / "traefik", f"--configFile={config}"], env=env, start_new_session=True
        )
        processes = [traefik, gunicorn]
        try:
            wait_ready(f"http://127.0.0.1:{args.port}/api/readyz", processes, timeout=300)
            print(f"stack: ready on http://127.0.0.1:{args.port}/api", flush=True)
            while not stopping and all(process.poll() is None for process in processes):
                time.sleep(0.2)
        finally:
            stop(traefik, timeout=15)  # no new requests in, those in flight answered
            stop(gunicorn, timeout=graceful + 10)
    failed = [p.returncode for p in processes if p.returncode not in (0, -signal.SIGTERM)]
    if not stopping or failed:
        print(f"stack: stopped (exit codes {[p.returncode for p in processes]})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

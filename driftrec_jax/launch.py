"""Run N JAX processes on this machine as one multi-process job (CPU devices, localhost only).

    python -m driftrec_jax.launch --num-processes 2 --devices-per-process 4 -- \\
        train.py --config configs/tiny_test.py --workdir /tmp/tiny2 --config.data.source=photos/

This is what a pod does, on one machine: each process gets K CPU devices
(``JAX_NUM_CPU_DEVICES``), and the environment variables that make
:func:`driftrec_jax.parallel.initialize_distributed` call ``jax.distributed.initialize`` with a
coordinator on ``127.0.0.1``:

  JAX_COORDINATOR_ADDRESS   127.0.0.1:PORT (a free port; the coordinator listens on 127.0.0.1 only)
  JAX_NUM_PROCESSES         N
  JAX_PROCESS_ID            0 .. N-1
  JAX_NUM_CPU_DEVICES       K (every process the same)
  DRIFTREC_HEARTBEAT_TIMEOUT   seconds after which JAX declares a silent process dead

Cross-process collectives on CPU go through gloo (JAX's default). Use it to try multi-process
code (training, checkpoints, failures) without a cluster; the tests use it. On a GPU cluster or a
TPU pod, the scheduler starts the processes instead (docs/TRAINING.md).

Each process's output goes to ``LOG_DIR/process_<i>.log``; process 0's is also echoed here. The
launcher returns 0 when every process does. When one fails (non-zero status or a signal), the
others get ``--grace`` seconds to stop by themselves (JAX stops them within the heartbeat
timeout), then are killed; the launcher prints the tail of each process's log, one line saying
which process failed and how, and returns non-zero. ``--timeout`` bounds the whole job (status 124).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PROG = "python -m driftrec_jax.launch"
TIMEOUT_STATUS = 124
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(base: dict, process_id: int, num_processes: int, port: int, devices_per_process: int | None,
              heartbeat_timeout: int | None) -> dict:
    """The environment of process ``process_id``: the job's description, CPU only, and no
    ``--xla_force_host_platform_device_count`` (which clashes with cross-process CPU collectives;
    ``JAX_NUM_CPU_DEVICES`` sets the devices instead)."""
    env = dict(base)
    flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(num_processes),
        JAX_PROCESS_ID=str(process_id),
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
    )
    if devices_per_process is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
    if heartbeat_timeout is not None:
        env["DRIFTREC_HEARTBEAT_TIMEOUT"] = str(heartbeat_timeout)
    return env


def _command(args: list[str]) -> list[str]:
    """A ``.py`` script runs with this Python; anything else as given (``driftrec train ...``)."""
    if not args:
        raise ValueError("no command to run (put it after --)")
    return [sys.executable, *args] if args[0].endswith(".py") else list(args)


def describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code > 128 and code - 128 in signal.valid_signals():  # a shell reports a signal this way
        return f"exited with status {code} ({signal.Signals(code - 128).name})"
    return f"exited with status {code}"


def _pump(pipe, log_path: str, echo) -> None:
    """Copy a child's output to its log file (and to ``echo``) as it comes."""
    with open(log_path, "ab") as log:
        while True:
            chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not chunk:
                break
            log.write(chunk)
            log.flush()
            if echo is not None:
                echo.write(chunk)
                echo.flush()


def _tail(path: str, lines_wanted: int) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read()[-200_000:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(lines[-lines_wanted:]) if lines else "(empty log)"


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def launch(command: list[str], num_processes: int, devices_per_process: int | None = None,
           timeout: float | None = None, grace: float = 5.0, heartbeat_timeout: int | None = None,
           log_dir: str | None = None, port: int | None = None, echo: bool = True,
           env: dict | None = None, tail_lines: int = 30, out=None) -> int:
    """Run ``command`` as ``num_processes`` processes of one JAX job; returns the job's status.

    0 when every process exits 0; ``TIMEOUT_STATUS`` when ``timeout`` seconds pass first; else the
    first failing process's status (128 + N when it was killed by signal N).
    """
    out = out or sys.stderr
    if num_processes < 1:
        raise ValueError("--num-processes must be at least 1")
    if devices_per_process is not None and devices_per_process < 1:
        raise ValueError("--devices-per-process must be at least 1")
    cmd = _command(command)
    log_dir = log_dir or tempfile.mkdtemp(prefix="driftrec_launch_")
    os.makedirs(log_dir, exist_ok=True)
    port = port or free_port()
    base = dict(os.environ if env is None else env)
    procs, pumps, logs = [], [], []
    start = time.monotonic()
    status = None
    try:
        for i in range(num_processes):
            logs.append(os.path.join(log_dir, f"process_{i}.log"))
            open(logs[i], "wb").close()
            p = subprocess.Popen(cmd, env=child_env(base, i, num_processes, port, devices_per_process,
                                                    heartbeat_timeout),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # its own process group: killed with its children
            procs.append(p)
            t = threading.Thread(target=_pump, args=(p.stdout, logs[i], sys.stderr.buffer if echo and i == 0 else None),
                                 daemon=True)
            t.start()
            pumps.append(t)
        # One thread per process records when it ends: when a process dies and a survivor stops
        # a few milliseconds later, the one that failed first is the one to name.
        ended: dict[int, float] = {}

        def watch(i):
            procs[i].wait()
            ended[i] = time.monotonic()

        for i in range(num_processes):
            threading.Thread(target=watch, args=(i,), daemon=True).start()
        failed, failed_at, timed_out = None, None, False
        while True:
            done = dict(ended)
            if failed is None:
                bad = sorted((t, i) for i, t in done.items() if procs[i].returncode != 0)
                if bad:
                    failed, failed_at = bad[0][1], bad[0][0]
            if len(done) == num_processes:
                break
            now = time.monotonic()
            if timeout and now - start > timeout:
                timed_out = True
                break
            if failed is not None and now - failed_at > grace:
                break
            time.sleep(0.1)
        stopped = [i for i in range(num_processes) if i not in ended]
        for i in stopped:
            _kill_group(procs[i], signal.SIGTERM)
        deadline = time.monotonic() + 5
        for i in stopped:
            try:
                procs[i].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(procs[i], signal.SIGKILL)
                procs[i].wait()
        for t in pumps:
            t.join(5)
        if not timed_out and failed is None:
            status = 0
            return 0
        for i, p in enumerate(procs):
            how = "was stopped by the launcher" if i in stopped else describe_status(p.returncode)
            print(f"---- process {i} {how}; last lines of {logs[i]}:", file=out)
            print(_tail(logs[i], tail_lines), file=out)
        survivors = [i for i in range(num_processes) if i != failed]
        if timed_out:
            print(f"{PROG}: the job ran out of its {timeout:g} s; stopped all {num_processes} processes "
                  f"(logs in {log_dir})", file=out)
            status = TIMEOUT_STATUS
            return status
        code = procs[failed].returncode
        others = ("; the other processes stopped by themselves" if survivors and not stopped else
                  f"; stopped the {len(stopped)} still running" if stopped else "")
        print(f"{PROG}: process {failed} of {num_processes} {describe_status(code)} "
              f"{failed_at - start:.0f} s after the start{others} (logs in {log_dir})", file=out)
        status = code if code > 0 else 128 - code
        return status
    finally:
        if status is None:  # interrupted (Ctrl-C) or failed to start: leave nothing running
            for p in procs:
                if p.poll() is None:
                    _kill_group(p, signal.SIGKILL)
                    p.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    else:
        command = []
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a command as N JAX processes with CPU devices on this machine "
        "(a multi-process job on localhost). Put the command after --.",
        epilog="Example: python -m driftrec_jax.launch -n 2 -k 4 -- train.py --config tiny_test "
        "--workdir /tmp/run --config.data.source=photos/. See docs/TRAINING.md for clusters and pods.")
    parser.add_argument("-n", "--num-processes", type=int, required=True)
    parser.add_argument("-k", "--devices-per-process", type=int, default=None,
                        help="CPU devices of each process (JAX_NUM_CPU_DEVICES; default: JAX's, 1)")
    parser.add_argument("--timeout", type=float, default=0,
                        help="stop every process after this many seconds, status 124 (default: no limit)")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="after one process fails, seconds the others get to stop by themselves "
                             "before they are killed (default 5)")
    parser.add_argument("--heartbeat-timeout", type=int, default=None,
                        help="seconds without heartbeats after which JAX declares a process dead and "
                             "stops the others (default: JAX's, 100)")
    parser.add_argument("--log-dir", default=None, help="where process_<i>.log go (default: a new temporary folder)")
    parser.add_argument("--port", type=int, default=None, help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--quiet", action="store_true", help="do not echo process 0's output")
    args = parser.parse_args(argv)
    if not command:
        parser.error("no command: put it after --, e.g. -- train.py --config tiny_test --workdir DIR")
    try:
        return launch(command, args.num_processes, args.devices_per_process, args.timeout or None, args.grace,
                      args.heartbeat_timeout, args.log_dir, args.port, echo=not args.quiet)
    except (ValueError, OSError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

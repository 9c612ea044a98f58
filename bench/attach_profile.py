"""Profile a running ``map-spatial`` from outside for a stretch of its training: where whole runs differ.

    .venv/bin/python bench/run_scale.py --batch-sizes 5000 --epochs 100 --label _x &
    .venv/bin/python bench/attach_profile.py --outdir-contains ours_x_ --after-epoch 45 --seconds 30 --out /tmp/x

``bench/minibatch_step.py`` times the training step in a process of its own; this looks at the real run
instead, once its log has reached ``--after-epoch``. Over ``--seconds`` it takes, per thread, CPU time
(user and system), minor page faults and context switches from ``/proc``, the memory in transparent huge
pages at its start and end, and a ``perf record`` of every thread at 499 Hz; then it prints those figures,
the epochs the window covered (from the log's timestamps) and perf's shares by shared object, by thread
and by symbol. The perf data stays in ``<out>.perf.data``
and the figures in ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil

EPOCH_LINE = re.compile(r"^(\S+ \S+),\d+ .*mapping epoch (\d+)/(\d+)")


def find_mapping(outdir_contains: str, timeout: float) -> tuple[psutil.Process, Path]:
    """The running map-spatial whose --outdir contains the string, and its output folder (not the harness's spawner)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info["cmdline"] or []
            if argv[1:3] == ["-m", "cell2location_nf"] and "map-spatial" in argv and "--outdir" in argv:
                outdir = Path(argv[argv.index("--outdir") + 1])
                if outdir_contains in outdir.name:
                    return proc, outdir
        time.sleep(2)
    raise SystemExit(f"no map-spatial with an --outdir containing {outdir_contains!r} within {timeout:.0f} s")


def logged_epochs(log: Path) -> list[tuple[float, int]]:
    """(unix time, epoch) of every epoch line the log holds so far."""
    rows = []
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            match = EPOCH_LINE.match(line)
            if match:
                rows.append((time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")), int(match.group(2))))
    return rows


def thread_counters(pid: int) -> dict[int, dict[str, float]]:
    """Per thread: user and system CPU seconds, minor faults, voluntary and involuntary context switches."""
    tick = float(os.sysconf("SC_CLK_TCK"))
    counters = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after the command name, from field 3 (state)
        switches = dict(re.findall(r"^(voluntary_ctxt_switches|nonvoluntary_ctxt_switches):\s+(\d+)", status, re.M))
        counters[int(task.name)] = {
            "user_s": int(fields[11]) / tick, "system_s": int(fields[12]) / tick, "minflt": int(fields[7]),
            "voluntary": int(switches.get("voluntary_ctxt_switches", 0)),
            "involuntary": int(switches.get("nonvoluntary_ctxt_switches", 0)),
        }
    return counters


def huge_pages_mib(pid: int | str = "self") -> float:
    """Resident MiB of the process backed by transparent huge pages (AnonHugePages); also ``minibatch_step.py``'s."""
    match = re.search(r"^AnonHugePages:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M)
    return round(int(match.group(1)) / 1024, 1) if match else 0.0


def perf_report(data: Path, sort: str, top: int) -> list[str]:
    """The first ``top`` rows of ``perf report`` sorted by ``sort`` (percent and key)."""
    text = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort],
                          capture_output=True, text=True, check=False).stdout
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir-contains", required=True, help="Part of the run's --outdir name.")
    parser.add_argument("--after-epoch", type=int, default=45, help="Start once the log has this epoch's line.")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True, help="Prefix of the .perf.data and .json written.")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    proc, outdir = find_mapping(args.outdir_contains, timeout=600)
    log = outdir / "log.txt"
    while not any(epoch >= args.after_epoch for _, epoch in logged_epochs(log)):
        if not proc.is_running():
            raise SystemExit(f"{outdir.name} ended before epoch {args.after_epoch}")
        time.sleep(1)
    data = args.out.with_suffix(".perf.data")
    recorder = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(proc.pid), "-o", str(data)])
    time.sleep(1)  # perf attaches to every thread
    huge_before = huge_pages_mib(proc.pid)
    before, start = thread_counters(proc.pid), time.time()
    time.sleep(args.seconds)
    after, end = thread_counters(proc.pid), time.time()
    huge_after = huge_pages_mib(proc.pid)
    recorder.send_signal(signal.SIGINT)
    recorder.wait()

    threads = {}
    for tid, now in after.items():
        then = before.get(tid, dict.fromkeys(now, 0))
        delta = {key: round(now[key] - then[key], 3) for key in now}
        if delta["user_s"] + delta["system_s"] > 0.05 or delta["minflt"] > 0:
            threads[tid] = delta
    totals = {key: round(sum(d[key] for d in threads.values()), 3) for key in ("user_s", "system_s", "minflt",
                                                                               "voluntary", "involuntary")}
    epochs = logged_epochs(log)
    summary = {
        "outdir": outdir.name, "window_s": round(end - start, 2), "threads": threads, "totals": totals,
        "huge_pages_mib": [huge_before, huge_after],
        "minflt_per_s": round(totals["minflt"] / (end - start), 1),
        "epoch_lines_around": [(time.strftime("%H:%M:%S", time.localtime(t)), e) for t, e in epochs
                               if start - 60 <= t <= end + 60],
        "by_dso": perf_report(data, "dso", args.top),
        "by_thread": perf_report(data, "pid", args.top),
        "by_symbol": perf_report(data, "dso,sym", args.top),
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("by_")}, indent=2))
    for key in ("by_dso", "by_thread", "by_symbol"):
        print(f"\n{key}:")
        print("\n".join(summary[key]))


if __name__ == "__main__":
    main()

"""snakebatch side by side with the peers, alternating runs on one corpus, medians reported.

    python benchmarks/compare.py                                  # stdlib corpus, 2 workers, 5 rounds
    python benchmarks/compare.py --corpus django --corpus sympy --rounds 3
    python benchmarks/compare.py --corpus tree100k --tools snakebatch,pool --no-efficiency --no-limits
    python benchmarks/compare.py --scale tree10k,tree1m           # peak RSS and first part at scale

Each round runs every tool once, in turn (snakebatch, pool, dask, datatrove, and with
--efficiency each again with one worker, and the one-core `limits.py` figures), so a change in
the machine's load hits them all alike. Every tool is a subprocess: snakebatch is the CLI
(`python -m snakebatch run CORPUS -o TMP --no-progress --json -j N`), the peers are the scripts
in benchmarks/peers/. A thread samples the RSS of the subprocess and all its descendants every
50 ms (summed: pages shared between processes count once per process, as `ps` shows them) and
the CPU time of each process; for snakebatch it also polls OUT/files/ for the first committed part.

Prints a table per corpus and writes it, with a description of the machine, into
benchmarks/RESULTS.md between markers (one section per corpus; text outside them is kept).
Corpora are built on first use (corpora.py); dask and datatrove are skipped with a note when
they are not installed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from corpora import corpus as corpus_path  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")
SAMPLE_S = 0.05
PART_POLL_S = 0.01
TOOLS = ("snakebatch", "pool", "dask", "datatrove")
PEER_SCRIPTS = {
    "pool": "pool_script.py",
    "dask": "dask_bag_script.py",
    "datatrove": "datatrove_script.py",
}
TOOL_MODULES = {"dask": "distributed", "datatrove": "datatrove"}


# -- measuring one run ---------------------------------------------------------------------------

class TreeSampler(threading.Thread):
    """Peak RSS of a process and its descendants, CPU seconds per process, first part file."""

    def __init__(self, pid: int, started: float, parts_dir: str | None):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.started = started
        self.parts_dir = parts_dir
        self.peak_rss = 0
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, last user+system seen)
        self.first_part_s: float | None = None
        self.done = threading.Event()

    def _sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in processes:
            try:
                with process.oneshot():
                    total += process.memory_info().rss
                    times = process.cpu_times()
            except psutil.Error:
                continue
            role = "main" if process.pid == self.root.pid else "children"
            self.cpu[process.pid] = (role, times.user + times.system)
        self.peak_rss = max(self.peak_rss, total)

    def _poll_parts(self) -> None:
        try:
            with os.scandir(self.parts_dir) as it:
                if any(e.name.endswith(".parquet") for e in it):
                    self.first_part_s = time.perf_counter() - self.started
        except OSError:
            pass

    def run(self) -> None:
        next_sample = 0.0
        while not self.done.is_set():
            now = time.perf_counter()
            if now >= next_sample:
                self._sample()
                next_sample = now + SAMPLE_S
            if self.parts_dir is not None and self.first_part_s is None:
                self._poll_parts()
            self.done.wait(PART_POLL_S if self.parts_dir is not None and self.first_part_s is None else SAMPLE_S)

    def cpu_seconds(self) -> dict:
        main = sum(t for role, t in self.cpu.values() if role == "main")
        children = sum(t for role, t in self.cpu.values() if role == "children")
        return {"main": main, "children": children}


def _command(tool: str, source: str, out: str, workers: int) -> list[str]:
    if tool == "snakebatch":
        return [sys.executable, "-m", "snakebatch", "run", source, "-o", out, "--no-progress", "--json",
                "-j", str(workers)]
    if tool == "limits":
        return [sys.executable, os.path.join(HERE, "limits.py"), source, "--json"]
    return [sys.executable, os.path.join(HERE, "peers", PEER_SCRIPTS[tool]), source, out, "-j", str(workers)]


def run_once(tool: str, source: str, workers: int, scratch: str, engine: str = ROOT) -> dict:
    out = os.path.join(scratch, f"out-{tool}-{workers}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (engine, env.get("PYTHONPATH")) if p)
    parts_dir = os.path.join(out, "files") if tool == "snakebatch" else None
    started = time.perf_counter()
    proc = subprocess.Popen(_command(tool, source, out, workers), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=scratch)
    sampler = TreeSampler(proc.pid, started, parts_dir)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} -j {workers} exited {proc.returncode}:\n{stderr.decode()[-3000:]}")
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    return {"tool": tool, "workers": workers, "wall_s": wall, "peak_rss": sampler.peak_rss,
            "first_part_s": sampler.first_part_s, "cpu_s": sampler.cpu_seconds(), "report": report}


# -- the machine ---------------------------------------------------------------------------------

def machine(engine: str = ROOT) -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # The last commit that changed the engine (benchmark commits do not change what is measured).
    commit = subprocess.run(["git", "-C", engine, "log", "-1", "--format=%h", "--", "snakebatch"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "engine": engine,
    }


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the figures ---------------------------------------------------------------------------------

def _median(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def summarize(runs: list[dict], workers: int, corpus_files: int, corpus_bytes: int) -> list[dict]:
    by_key: dict[tuple, list] = {}
    for run in runs:
        by_key.setdefault((run["tool"], run["workers"]), []).append(run)
    rows = []
    for (tool, n), group in by_key.items():
        if tool == "limits":
            continue
        wall = _median(group, lambda r: r["wall_s"])
        files = group[0]["report"].get("files", corpus_files)
        nbytes = group[0]["report"].get("bytes", corpus_bytes)
        firsts = [r["first_part_s"] for r in group if r["first_part_s"] is not None]
        row = {
            "tool": tool, "workers": n, "runs": len(group), "wall_s": wall,
            "wall_min": min(r["wall_s"] for r in group), "wall_max": max(r["wall_s"] for r in group),
            "files": files, "bytes": nbytes, "files_per_s": files / wall, "mb_per_s": nbytes / 1e6 / wall,
            "peak_rss": _median(group, lambda r: r["peak_rss"]),
            "cpu_main": _median(group, lambda r: r["cpu_s"]["main"]),
            "cpu_children": _median(group, lambda r: r["cpu_s"]["children"]),
            "first_part_s": statistics.median(firsts) if firsts else None,
        }
        compactions = [r["report"]["compaction"]["seconds"] for r in group if r["report"].get("compaction")]
        if compactions:
            row["compaction_s"] = statistics.median(compactions)
        one = by_key.get((tool, 1))
        if n > 1 and one:
            row["efficiency"] = _median(one, lambda r: r["wall_s"]) / (n * wall)
        # Paired by round: each round's wall time over snakebatch's in the same round, so that a
        # change of load between rounds cancels out.
        base_runs = by_key.get(("snakebatch", workers), [])
        if base_runs and (tool, n) != ("snakebatch", workers):
            pairs = [r["wall_s"] / b["wall_s"] for r, b in zip(group, base_runs)]
            if pairs:
                row["paired_ratio"] = statistics.median(pairs)
        rows.append(row)
    return rows


def limits_summary(runs: list[dict]) -> dict | None:
    group = [r["report"] for r in runs if r["tool"] == "limits"]
    if not group:
        return None
    out = {"files": group[0]["files"], "bytes": group[0]["bytes"], "runs": len(group)}
    for key in ("parse_gc_on", "parse_gc_off", "parse_walk", "parse_bodies", "parser", "read_hash"):
        out[key] = statistics.median(g[key]["files_per_s"] for g in group)
        out[key + "_found"] = group[0][key]["found"]
    return out


def scaling_model(rows: list[dict], workers: int, target: int = 16) -> list[str]:
    """T(n) = a + b/n fitted through the 1-worker and N-worker medians (Amdahl: a is the serial
    part, b the parallel work), extrapolated to `target` cores; the coordinator's own CPU time
    (main process) bounds it too, since one process commits every batch."""
    out = []
    for tool in TOOLS:
        one = next((r for r in rows if r["tool"] == tool and r["workers"] == 1), None)
        many = next((r for r in rows if r["tool"] == tool and r["workers"] == workers), None)
        if not one or not many or workers < 2:
            continue
        b = (one["wall_s"] - many["wall_s"]) * workers / (workers - 1)
        a = one["wall_s"] - b
        if a < 0 or b <= 0:
            out.append(f"Scaling model, {tool}: not fitted (T(1) = {one['wall_s']:.2f} s, T({workers}) = "
                       f"{many['wall_s']:.2f} s: the machine's load changed between the runs).")
            continue
        predicted = max(a + b / target, many["cpu_main"])
        out.append(f"Scaling model, {tool}: T(n) = {a:.2f} s serial + {b:.2f} s / n (fitted on n = 1 and "
                   f"{workers}); at n = {target}: {predicted:.2f} s, parallel efficiency "
                   f"{one['wall_s'] / (target * predicted) * 100:.0f}% (the main process used "
                   f"{many['cpu_main']:.2f} CPU s per run, a floor no number of workers removes).")
    return out


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render(name: str, source: str, workers: int, rows: list[dict], limits: dict | None, notes: list[str],
           info: dict, load_start: str, load_end: str, when: str, rounds: int) -> str:
    lines = [f"### Corpus `{name}` ({source})", ""]
    files = next((r["files"] for r in rows if r["tool"] == "snakebatch"), rows[0]["files"] if rows else 0)
    nbytes = next((r["bytes"] for r in rows if r["tool"] == "snakebatch"), rows[0]["bytes"] if rows else 0)
    lines.append(f"{files:,} files, {nbytes / 1e6:.1f} MB; {workers} workers; {rounds} alternating rounds, "
                 f"medians (min-max of wall time in brackets). Run {when}; load average at start "
                 f"{load_start}, at end {load_end} (1, 5, 15 min).")
    lines.append("")
    base = next((r for r in rows if r["tool"] == "snakebatch" and r["workers"] == workers), None)
    lines.append("| tool | workers | wall s | files/s | MB/s | peak RSS MB | CPU s main + children | "
                 "wall / snakebatch (medians; paired by round) | parallel efficiency | first part s |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = {t: i for i, t in enumerate(TOOLS)}
    for r in sorted(rows, key=lambda r: (order.get(r["tool"], 99), -r["workers"])):
        ratio = f"{r['wall_s'] / base['wall_s']:.2f}x" if base else "-"
        if "paired_ratio" in r:
            ratio += f"; {r['paired_ratio']:.2f}x"
        eff = f"{r['efficiency'] * 100:.0f}%" if "efficiency" in r else "-"
        lines.append(
            f"| {r['tool']} | {r['workers']} | {r['wall_s']:.2f} ({r['wall_min']:.2f}-{r['wall_max']:.2f}) | "
            f"{r['files_per_s']:,.0f} | {r['mb_per_s']:.1f} | {r['peak_rss'] / 1e6:.0f} | "
            f"{r['cpu_main']:.1f} + {r['cpu_children']:.1f} | {ratio} | {eff} | {_fmt_s(r['first_part_s'])} |"
        )
    if limits:
        lines += ["", f"One-core limits on the same corpus ({limits['files']:,} .py files preloaded in memory, "
                  f"median of {limits['runs']}; `limits.py`):", "",
                  "| measure | files/s | vs bare parse (gc on) |", "| --- | ---: | ---: |"]
        labels = {
            "parse_gc_on": "bare `ast.parse`, gc on",
            "parse_gc_off": "bare `ast.parse`, gc off",
            "parse_walk": "`ast.parse` + `ast.walk` (definitions, imports)",
            "parse_bodies": "`ast.parse` + statement bodies only (gc off)",
            "parser": "snakebatch `python` parser (line counts, parse, extract)",
            "read_hash": "read from disk + xxh3-128 + blob SHA-1",
        }
        for key, label in labels.items():
            lines.append(f"| {label} | {limits[key]:,.0f} | {limits[key] / limits['parse_gc_on']:.2f} |")
        lines.append("")
        lines.append(f"Definitions + imported names found: `ast.walk` {limits['parse_walk_found']:,}, statement "
                     f"bodies {limits['parse_bodies_found']:,}. The walk costs "
                     f"{(limits['parse_gc_on'] / limits['parse_walk'] - 1) * 100:.0f}% on top of the parse; "
                     f"the body visit {(limits['parse_gc_off'] / limits['parse_bodies'] - 1) * 100:.0f}% on "
                     f"top of the gc-off parse.")
        if base:
            limit_s = limits["files"] / (workers * limits["parse_gc_off"])
            lines.append(f"Limit with {workers} workers (bare parse, gc off, perfectly parallel): "
                         f"{limit_s:.2f} s for the .py files; snakebatch end to end {base['wall_s']:.2f} s = "
                         f"{limit_s / base['wall_s'] * 100:.0f}% of the limit.")
    compacted = [r for r in rows if "compaction_s" in r]
    if compacted:
        lines += ["", "Of snakebatch's wall time, compacting the parts of the complete job into a few large ones "
                  "took (median): " + ", ".join(f"{r['compaction_s']:.2f} s with {r['workers']} worker(s)"
                                                for r in compacted) + "."]
    model = scaling_model(rows, workers)
    if model:
        lines += ["", *model]
    for note in notes:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def machine_section(info: dict) -> str:
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['ram_gib']:.1f} GiB RAM, Python {info['python']}, {info['platform']}; snakebatch from "
        f"{info['engine']} at commit {info['commit']}. The machine is shared with other jobs: load averages are given with "
        f"each table, and figures taken at a load above the core count are noisy.\n"
    )


def write_section(key: str, text: str, path: str = RESULTS) -> None:
    """Replace (or append) the section between this key's markers in RESULTS.md."""
    start, end = f"<!-- compare:{key} start -->", f"<!-- compare:{key} end -->"
    block = f"{start}\n{text}{end}\n"
    try:
        with open(path) as fh:
            current = fh.read()
    except FileNotFoundError:
        current = "# snakebatch benchmark results\n\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    updated = pattern.sub(lambda m: block, current) if pattern.search(current) else current + "\n" + block
    with open(path, "w") as fh:
        fh.write(updated)


# -- scale: peak RSS and first part on trees of different sizes ----------------------------------

def run_scale(names: list[str], workers: int, scratch: str, write: bool, engine: str) -> None:
    load_start = _load()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for name in names:
        source = corpus_path(name)
        run = run_once("snakebatch", source, workers, scratch, engine)
        report = run["report"]
        results.append((name, run))
        print(f"{name}: {report['files']:,} files in {run['wall_s']:.1f} s, peak RSS {run['peak_rss'] / 1e6:.0f} MB "
              f"(snakebatch's own {report['peak_rss_bytes'] / 1e6:.0f} MB), first part at "
              f"{_fmt_s(run['first_part_s'])} s", flush=True)
    lines = [f"### Memory and streaming at scale: {', '.join(names)} (snakebatch only)", "",
             f"{workers} workers, one run each, {when}; load average at start {load_start}, at end {_load()}.", "",
             "| corpus | files | wall s | files/s | peak RSS MB (sampled tree) | peak RSS MB (governor) | "
             "first part s | RSS vs smallest |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    smallest = results[0][1]["peak_rss"]
    for name, run in results:
        report = run["report"]
        lines.append(f"| {name} | {report['files']:,} | {run['wall_s']:.1f} | {report['files'] / run['wall_s']:,.0f} | "
                     f"{run['peak_rss'] / 1e6:.0f} | {report['peak_rss_bytes'] / 1e6:.0f} | "
                     f"{_fmt_s(run['first_part_s'])} | {run['peak_rss'] / smallest:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        write_section("scale-" + "-".join(names), text)


def render_saved(path: str, write: bool) -> int:
    with open(path) as fh:
        saved = json.load(fh)
    name = saved.get("corpus") or re.sub(r"^results-|\.json$", "", os.path.basename(path))
    workers = saved.get("workers") or max(r["workers"] for r in saved["runs"])
    when = saved.get("when") or datetime.datetime.fromtimestamp(
        os.path.getmtime(path), datetime.UTC).strftime("%Y-%m-%d %H:%M UTC (end)")
    rounds = saved.get("rounds") or sum(1 for r in saved["runs"] if r["tool"] == "snakebatch"
                                        and r["workers"] == workers)
    rows = summarize(saved["runs"], workers, 0, 0)
    text = render(name, saved.get("source", name), workers, rows, limits_summary(saved["runs"]),
                  saved.get("notes", []), saved["machine"], saved["load_start"], saved["load_end"], when, rounds)
    print(text)
    if write:
        write_section(f"corpus-{name}", text)
    return 0


# -- main ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--corpus", action="append", help="stdlib (default), django, sympy, tree100k, tree1m or a folder")
    ap.add_argument("-j", "--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--efficiency", action=argparse.BooleanOptionalAction, default=True,
                    help="also run each tool with one worker, for parallel efficiency")
    ap.add_argument("--efficiency-tools", default="snakebatch,pool",
                    help="tools run with one worker too (the others' efficiency is left out to save time)")
    ap.add_argument("--limits", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the one-core limits (limits.py) in each round")
    ap.add_argument("--scale", help="comma-separated trees (e.g. tree10k,tree1m): peak RSS and first part only")
    ap.add_argument("--engine", default=ROOT,
                    help="checkout whose snakebatch is measured (default: this one), e.g. to compare branches")
    ap.add_argument("--render", metavar="JSON", help="print (and write) a corpus table again from the "
                    "results-*.json of an earlier run, without running anything")
    ap.add_argument("--no-write", dest="write", action="store_false", help="print only; leave RESULTS.md alone")
    args = ap.parse_args(argv)

    if args.render:
        return render_saved(args.render, args.write)
    engine = os.path.abspath(args.engine)
    info = machine(engine)
    print(machine_section(info))
    scratch = tempfile.mkdtemp(prefix="snakebatch-compare-")
    try:
        if args.write:
            write_section("machine", "## Machine\n\n" + machine_section(info))
        if args.scale:
            run_scale(args.scale.split(","), args.workers, scratch, args.write, engine)
            return 0
        tools, notes = [], []
        for tool in args.tools.split(","):
            if tool not in TOOLS:
                ap.error(f"--tools: unknown tool {tool!r} (known: {', '.join(TOOLS)})")
            module = TOOL_MODULES.get(tool)
            if module and importlib.util.find_spec(module) is None:
                notes.append(f"{tool} skipped: `{module}` is not installed "
                             f"(pip install {'dask[distributed]' if tool == 'dask' else tool}).")
                continue
            tools.append(tool)
        plan = [(t, args.workers) for t in tools]
        if args.efficiency and args.workers > 1:
            plan += [(t, 1) for t in args.efficiency_tools.split(",") if t in tools]
        for name in args.corpus or ["stdlib"]:
            source = corpus_path(name)
            load_start = _load()
            when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            runs = []
            corpus_notes = list(notes)
            failed: set = set()
            for round_no in range(1, args.rounds + 1):
                steps = plan + ([("limits", 1)] if args.limits else [])
                for tool, n in steps:
                    if (tool, n) in failed:
                        continue
                    try:
                        run = run_once(tool, source, n, scratch, engine)
                    except RuntimeError as err:
                        failed.add((tool, n))
                        corpus_notes.append(f"{tool} -j {n} failed and was dropped: {str(err)[-500:]}")
                        print(f"  {tool} -j {n} FAILED: {err}", flush=True)
                        continue
                    runs.append(run)
                    if tool == "limits":
                        r = run["report"]
                        print(f"  round {round_no} limits: parse {r['parse_gc_on']['files_per_s']:.0f}/s, "
                              f"gc off {r['parse_gc_off']['files_per_s']:.0f}/s, walk "
                              f"{r['parse_walk']['files_per_s']:.0f}/s, bodies "
                              f"{r['parse_bodies']['files_per_s']:.0f}/s", flush=True)
                    else:
                        print(f"  round {round_no} {tool} -j {n}: {run['wall_s']:.2f} s, peak RSS "
                              f"{run['peak_rss'] / 1e6:.0f} MB, first part {_fmt_s(run['first_part_s'])}",
                              flush=True)
            rows = summarize(runs, args.workers, 0, 0)
            text = render(name, source, args.workers, rows, limits_summary(runs), corpus_notes, info,
                          load_start, _load(), when, args.rounds)
            print(text, flush=True)
            if args.write:
                write_section(f"corpus-{name if not os.path.isdir(name) else os.path.basename(name)}", text)
                with open(os.path.join(HERE, f"results-{os.path.basename(name)}.json"), "w") as fh:
                    json.dump({"machine": info, "corpus": name, "source": source, "workers": args.workers,
                               "rounds": args.rounds, "when": when, "notes": corpus_notes,
                               "load_start": load_start, "load_end": _load(), "runs": runs},
                              fh, indent=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

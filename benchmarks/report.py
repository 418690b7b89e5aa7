"""The report: the figures judged against the targets, printed as a table and written to results.json."""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any

from targets import (DELIVERY_CALL, ENS_PAGE_BUDGET, FAKE_THREADS, HERE, RELAY_THREADS, RELAY_WORKERS,
                     cpu_times)

TARGETS = {
    "throughput_vs_forwarder_pct": 80.0,  # at least
    "added_p50_ms": 2.0,  # at most
    "peak_rss_mib": 80.0,  # below
    "definition_to_schema_ms": 5.0,  # below
}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Figures:
    """What one run measured (run.py fills it in), and the figures derived from it."""

    quick: bool
    procs: int
    conns: int
    rounds: int
    warmup: float
    duration: float
    probe_rounds: int
    probe: float
    count: int
    started: float
    cpu_at_start: tuple[int, int]
    targets: list[str] = field(default_factory=list)
    loaded: dict[str, Any] = field(default_factory=dict)
    unloaded: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, Any] = field(default_factory=dict)
    rss: dict[int, float | None] = field(default_factory=dict)
    cold_start: float = 0.0
    schema: dict[str, Any] = field(default_factory=dict)
    profile_note: dict[str, Any] | None = None
    profile_error: str | None = None

    @property
    def concurrency(self) -> int:
        return self.procs * self.conns

    @property
    def rss_values(self) -> list[float]:
        return [v for v in self.rss.values() if v is not None]

    def checks(self) -> dict[str, tuple[float, bool]]:
        """Each target's figure and whether it was met."""
        loaded, unloaded, schema, rss_values = self.loaded, self.unloaded, self.schema, self.rss_values
        relay, fwd, direct = loaded["relay"], loaded["forwarder"], loaded["direct"]
        pct = relay["rps"] / fwd["rps"] * 100 if fwd["rps"] else 0.0
        added = relay["p50_ms"] - direct["p50_ms"]
        added_1 = unloaded["relay"]["p50_ms"] - unloaded["direct"]["p50_ms"]
        peak = max(rss_values) if rss_values else float("nan")
        return {
            "throughput_vs_forwarder_pct": (round(pct, 1), pct >= TARGETS["throughput_vs_forwarder_pct"]),
            "added_p50_ms": (round(added, 2), added <= TARGETS["added_p50_ms"]),
            "added_p50_ms_1_connection": (round(added_1, 2), added_1 <= TARGETS["added_p50_ms"]),
            "peak_rss_mib": (round(peak, 1), bool(rss_values) and peak < TARGETS["peak_rss_mib"]),
            "definition_to_schema_ms": (schema["total_ms"],
                                        schema["total_ms"] < TARGETS["definition_to_schema_ms"]),
        }

    def missed(self) -> list[str]:
        return [k for k, (_, ok) in self.checks().items() if not ok]


def publish(f: Figures) -> None:
    """Print the table and write benchmarks/results.json."""
    import gunicorn

    concurrency, rounds, warmup, duration = f.concurrency, f.rounds, f.warmup, f.duration
    probe_rounds, probe, count, calls = f.probe_rounds, f.probe, f.count, f.calls
    loaded, unloaded, targets, schema, cold_start = f.loaded, f.unloaded, f.targets, f.schema, f.cold_start
    rss, rss_values = f.rss, f.rss_values
    profile_note, profile_error, started, cpu_at_start = f.profile_note, f.profile_error, f.started, f.cpu_at_start
    checks, relay_missed = f.checks(), f.missed()
    pct = checks["throughput_vs_forwarder_pct"][0]
    added = loaded["relay"]["p50_ms"] - loaded["direct"]["p50_ms"]
    added_1 = unloaded["relay"]["p50_ms"] - unloaded["direct"]["p50_ms"]
    fwd_added_1 = unloaded["forwarder"]["p50_ms"] - unloaded["direct"]["p50_ms"]
    peak = max(rss_values) if rss_values else float("nan")

    setup = (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, gunicorn {gunicorn.__version__} "
             f"gthread; relay and forwarder: {RELAY_WORKERS} workers x {RELAY_THREADS} threads; fake provider: "
             f"1 worker x {FAKE_THREADS} threads")
    out: list[str] = [
        f"formrelay benchmark{' (--quick)' if f.quick else ''}: {setup}",
        f"load: closed loop, {concurrency} keep-alive connections ({f.procs} processes x {f.conns}), "
        f"{rounds} round(s) per target, interleaved, each {warmup:g} s warm-up + {duration:g} s measured; "
        f"1-connection rows: {probe_rounds} x {probe:g} s; all on 127.0.0.1",
        "",
        f"{'target':<12}{'conns':>6}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}",
    ]
    for label, table, conns in (("", loaded, concurrency), ("", unloaded, 1)):
        for name in targets:
            r = table[name]
            out.append(f"{name:<12}{conns:>6}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                       f"{r['requests']:>10}{r['errors']:>8}")
    bad = {f"{n}/{c}": t[n]["statuses"] for t, c in ((loaded, concurrency), (unloaded, 1)) for n in targets
           if set(t[n]["statuses"]) != {"200"}}
    if bad:
        out.append(f"  answers other than 200: {bad}")
    out += [
        "",
        f"{'figure':<48}{'value':>12}  {'target':<10}",
        f"{'relay throughput as % of forwarder':<48}{pct:>11.1f}%  {'>= 80 %':<10}"
        f"{verdict(checks['throughput_vs_forwarder_pct'][1])}",
        f"{'added p50 latency, relay - direct (' + str(concurrency) + ' conns)':<48}{added:>9.2f} ms  "
        f"{'<= 2 ms':<10}{verdict(checks['added_p50_ms'][1])}",
        f"{'added p50 latency, relay - direct (1 conn)':<48}{added_1:>9.2f} ms  "
        f"{'<= 2 ms':<10}{verdict(checks['added_p50_ms_1_connection'][1])}",
        f"{'  of which the bare forwarder already adds':<48}{fwd_added_1:>9.2f} ms",
        f"{'  relay over the bare forwarder (1 conn)':<48}{added_1 - fwd_added_1:>9.2f} ms",
        f"{'peak RSS per relay worker (VmHWM, max)':<48}{peak:>8.1f} MiB  {'< 80 MiB':<10}"
        f"{verdict(checks['peak_rss_mib'][1])}",
        f"{'  each worker':<48}{', '.join(f'{v:.1f}' for v in rss_values):>12}",
        f"{'cold start to first delivered submission':<48}{cold_start:>10.2f} s  {'-':<10}",
        f"{'200-field NGP definition -> schema (median)':<48}{schema['total_ms']:>9.2f} ms  {'< 5 ms':<10}"
        f"{verdict(checks['definition_to_schema_ms'][1])}",
        f"{'  definition / build_schema / instantiate':<48}{schema['definition_ms']:>6.2f} / "
        f"{schema['build_schema_ms']:.2f} / {schema['instantiate_ms']:.2f} ms  ({schema['runs']} runs, "
        f"{schema['fields']} fields)",
        "",
        f"upstream calls per 1,000 submissions (measured over {count} through the relay, scaled; "
        f"{RELAY_WORKERS} relay worker processes; ENS page_budget raised to {ENS_PAGE_BUDGET}):",
    ]
    for provider, c in calls.items():
        once = ", ".join(f"{k} {v}" for k, v in sorted(c["once_off_calls"].items())) or "none"
        clean = c["errors"] == 0 and set(c["relay_statuses"]) == {"200"}
        extra = "" if clean else f"  relay answers {c['relay_statuses']}"
        out.append(f"  {provider:<10} {DELIVERY_CALL[provider]} {c['delivery_calls_per_1000']:g} per 1,000; "
                   f"once-off (not scaled): {once}{extra}")
    ens_auth = calls["ens"]["calls"].get("ens:authenticate", 0)
    e1_auth = calls["engageone"]["calls"].get("engageone:authenticate", 0)
    calls_ok = {
        "ngp": calls["ngp"]["calls"].get("ngp:submit", 0) == calls["ngp"]["submissions"],
        "ens": (calls["ens"]["calls"].get("ens:process", 0) == calls["ens"]["submissions"]
                and ens_auth <= RELAY_WORKERS),
        "engageone": (calls["engageone"]["calls"].get("engageone:send", 0) == calls["engageone"]["submissions"]
                      and e1_auth <= RELAY_WORKERS),
    }
    out.append("  one delivery call per submission, <= 1 authenticate per relay worker: "
               + ", ".join(f"{p} {verdict(ok)}" for p, ok in calls_ok.items())
               + f"  (authenticates: ens {ens_auth}, engageone {e1_auth})")

    out += ["", f"missed: {', '.join(relay_missed) or 'none'}"]
    if profile_note is not None:
        out.append(f"cProfile (benchmarks/profile.txt), in-process, per submission: relay "
                   f"{profile_note['relay_ms']:.2f} ms, forwarder {profile_note['forwarder_ms']:.2f} ms; "
                   f"the relay's extra own time, largest first:")
        out += [f"  {name:<44}{ms:>+7.3f} ms" for name, ms in profile_note["extra_ms_by_package"][:8]]
    if profile_error:
        out.append(f"profile failed: {profile_error}")

    elapsed = time.monotonic() - started
    cpu_at_end = cpu_times()
    jiffies = cpu_at_end[0] - cpu_at_start[0]
    steal_pct = round((cpu_at_end[1] - cpu_at_start[1]) / jiffies * 100, 1) if jiffies > 0 else None
    out += ["", f"total run time {elapsed:.0f} s; CPU steal during the run "
                f"{'n/a' if steal_pct is None else f'{steal_pct:g} %'} (a busy host makes runs vary)"]
    print("\n".join(out))

    results = {
        "quick": f.quick,
        "setup": {"cpus": os.cpu_count(), "python": platform.python_version(), "gunicorn": gunicorn.__version__,
                  "worker_class": "gthread", "relay_workers": RELAY_WORKERS, "relay_threads": RELAY_THREADS,
                  "fake_workers": 1, "fake_threads": FAKE_THREADS, "load_processes": f.procs,
                  "connections_per_process": f.conns, "rounds": rounds, "warmup_s": warmup, "measure_s": duration,
                  "one_connection_rounds": probe_rounds, "one_connection_s": probe,
                  "ens_page_budget": ENS_PAGE_BUDGET},
        "loaded": loaded,
        "one_connection": unloaded,
        "cold_start_s": round(cold_start, 3),
        "peak_rss_mib": {str(pid): (round(v, 1) if v is not None else None) for pid, v in rss.items()},
        "definition_to_schema": schema,
        "upstream_calls": {**calls, "measured_submissions": count, "ok": calls_ok},
        "targets": {k: {"value": v, "target": TARGETS.get(k.replace("_1_connection", "")), "pass": ok}
                    for k, (v, ok) in checks.items()},
        "profile": profile_note,
        "run_time_s": round(elapsed, 1),
        "cpu_steal_pct": steal_pct,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")

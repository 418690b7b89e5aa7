"""Relay overhead on loopback: throughput and latency against a bare forwarder and the fake provider itself,
peak memory per worker, cold start, schema build time, and upstream calls per 1,000 submissions.

    python benchmarks/run.py [--quick] [--profile]

Every server is a gunicorn on 127.0.0.1 (free ports); the load comes from separate client processes, each
with keep-alive http.client connections in a closed loop. The table goes to stdout and the same figures to
benchmarks/results.json. When the relay misses a target, a cProfile of in-process submissions goes to
benchmarks/profile.txt (--profile writes it regardless).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

# The parts live next to this file: targets (servers and their config), loadgen (the clients), inprocess
# (schema build time and the profile) and report (targets, table, results.json).
from inprocess import definition_to_schema, profile_submissions
from loadgen import load, request_once, run_load, summarise
from report import Figures, publish
from targets import (DELIVERY_CALL, ENGAGEONE_BODY, ENS_BODY, FAKE_THREADS, FORM_HEADERS, HERE, HOST, JSON_HEADERS,
                     NGP_BODY, RELAY_THREADS, RELAY_WORKERS, ROOT, Servers, cpu_times, free_port, peak_rss_mib,
                     relay_config, to_toml, wait_until, worker_pids)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about 40 s in all)")
    parser.add_argument("--profile", action="store_true", help="write benchmarks/profile.txt even if all targets pass")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=4, help="keep-alive connections per load-generator process")
    args = parser.parse_args()

    rounds, warmup, duration, probe_rounds, probe, count, schema_runs, profile_count = (
        (1, 1.0, 3.0, 1, 1.0, 200, 50, 300) if args.quick else (3, 1.5, 4.0, 2, 1.5, 1000, 50, 1000))
    concurrency = args.procs * args.conns
    # SIGTERM ends the run like Ctrl-C does, through the finally that stops every server.
    signal.signal(signal.SIGTERM, _interrupt)

    figures = Figures(quick=args.quick, procs=args.procs, conns=args.conns, rounds=rounds, warmup=warmup,
                      duration=duration, probe_rounds=probe_rounds, probe=probe, count=count,
                      started=time.monotonic(), cpu_at_start=cpu_times())
    workdir = Path(tempfile.mkdtemp(prefix="formrelay-bench-"))
    servers = Servers(workdir)
    finished = False
    try:
        import formrelay.delivery.relay  # noqa: F401 (registers the providers' and [queue] schemas)
        from formrelay.core.config import load_config

        # The fake provider: ONE process (the sandbox counts calls per process), many threads.
        fake_port = free_port()
        fake = f"http://{HOST}:{fake_port}"
        fake_proc = servers.gunicorn("fake", "formrelay.sandbox:create_sandbox()", fake_port, 1, FAKE_THREADS, ROOT)
        wait_until(lambda: request_once(fake_port, "GET", "/_control/calls")[0] == 200, 30, "fake provider", fake_proc)

        config_path = workdir / "formrelay.toml"
        config_path.write_text(to_toml(relay_config(fake, workdir)))
        load_config(config_path)  # fail here, not in gunicorn, if the bench config is wrong

        # The relay, timed from spawn to the first delivered submission.
        relay_port = free_port()
        body = json.dumps(NGP_BODY).encode()
        t0 = time.monotonic()
        relay_proc = servers.gunicorn("relay", "wsgi:app", relay_port, RELAY_WORKERS, RELAY_THREADS, ROOT,
                                      env={"FORMRELAY_CONFIG": str(config_path)})

        def delivered() -> bool:
            status, answer = request_once(relay_port, "POST", "/v1/forms/join", body, JSON_HEADERS)
            return status == 200 and json.loads(answer).get("status") == "delivered"

        try:
            wait_until(delivered, 60, "relay", relay_proc)
        except RuntimeError:
            print(servers.log_tail("relay"), file=sys.stderr)
            raise
        cold_start = time.monotonic() - t0

        fwd_port = free_port()
        fwd_proc = servers.gunicorn("forwarder", "forwarder:app", fwd_port, RELAY_WORKERS, RELAY_THREADS, HERE,
                                    env={"FORWARDER_UPSTREAM": f"{fake}/ngp/v2/forms/demo-petition"})
        wait_until(lambda: request_once(fwd_port, "POST", "/v1/forms/join", body, JSON_HEADERS)[0] == 200, 30,
                   "forwarder", fwd_proc)

        form_body = urllib.parse.urlencode(NGP_BODY).encode()
        targets = {
            "relay": (relay_port, "/v1/forms/join", body, JSON_HEADERS),
            "forwarder": (fwd_port, "/v1/forms/join", body, JSON_HEADERS),
            "direct": (fake_port, "/ngp/v2/forms/demo-petition", form_body, FORM_HEADERS),
        }
        # Rounds interleave the targets, so that drift on a shared machine hits all three alike.
        runs: dict[str, list[Any]] = {name: [] for name in targets}
        for r in range(rounds):
            for name, (port, path, payload, headers) in targets.items():
                request_once(fake_port, "POST", "/_control/reset")  # the fake keeps every submission in memory
                print(f"... round {r + 1}/{rounds} {name}: {concurrency} connections, {warmup:g} s warm-up + "
                      f"{duration:g} s", file=sys.stderr)
                runs[name].append(run_load(port, path, payload, headers, args.procs, args.conns, warmup, duration))
        loaded = {name: summarise(r) for name, r in runs.items()}
        runs = {name: [] for name in targets}
        for r in range(probe_rounds):
            for name, (port, path, payload, headers) in targets.items():
                print(f"... round {r + 1}/{probe_rounds} {name}: 1 connection, {probe:g} s", file=sys.stderr)
                runs[name].append(run_load(port, path, payload, headers, 1, 1, 0.3, probe))
        unloaded = {name: summarise(r) for name, r in runs.items()}

        # Upstream calls per 1,000 submissions, per provider (sandbox reset before each).
        calls: dict[str, Any] = {}
        for provider, slug, payload in (("ngp", "join", NGP_BODY), ("ens", "mp", ENS_BODY),
                                        ("engageone", "toolkit", ENGAGEONE_BODY)):
            request_once(fake_port, "POST", "/_control/reset")
            print(f"... {provider}: {count} submissions through the relay", file=sys.stderr)
            run = load(relay_port, f"/v1/forms/{slug}", json.dumps(payload).encode(), JSON_HEADERS, 2, 4,
                       total=count)
            _, answer = request_once(fake_port, "GET", "/_control/calls")
            counted = json.loads(answer)
            scale = 1000 / run["requests"]
            delivery = f"{provider}:{DELIVERY_CALL[provider]}"
            calls[provider] = {
                "submissions": run["requests"], "relay_statuses": run["statuses"], "errors": run["errors"],
                "calls": counted,
                "delivery_calls_per_1000": round(counted.get(delivery, 0) * scale, 1),
                "once_off_calls": {k.split(":", 1)[1]: v for k, v in counted.items() if k != delivery},
            }

        # Peak RSS of each relay worker, after all the load it served.
        pids = worker_pids(relay_proc.pid)
        rss = {pid: peak_rss_mib(pid) for pid in pids}

        schema = definition_to_schema(schema_runs)

        figures.targets = list(targets)
        figures.loaded, figures.unloaded, figures.calls = loaded, unloaded, calls
        figures.rss, figures.cold_start, figures.schema = rss, cold_start, schema
        relay_missed = figures.missed()
        if relay_missed or args.profile:
            print(f"... profiling {profile_count} in-process submissions", file=sys.stderr)
            request_once(fake_port, "POST", "/_control/reset")
            try:
                figures.profile_note = profile_submissions(fake, workdir, profile_count, HERE / "profile.txt",
                                                           schema_too="definition_to_schema_ms" in relay_missed)
            except Exception as exc:  # noqa: BLE001 (the figures stand without the profile)
                figures.profile_error = f"{exc.__class__.__name__}: {exc}"
        finished = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        finished = True  # nothing to look into: no logs to keep
        return 130
    finally:
        servers.stop_all()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"server logs kept in {workdir}", file=sys.stderr)

    publish(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

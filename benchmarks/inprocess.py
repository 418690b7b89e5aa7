"""In-process measurements: a 200-field definition turned into a schema, and a cProfile of submissions
through the relay set against the bare forwarder (written when a target is missed, or on --profile)."""
from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from targets import HERE, NGP_BODY, relay_config


def ngp_definition_doc(n: int = 200) -> dict[str, Any]:
    """A synthetic NGP definition with n fields of every element shape the provider reads, in fieldsets."""
    shapes = [
        lambda i: {"type": "textfield", "maxlength": 50, "required": i % 3 == 0, "queryString": f"q{i}"},
        lambda i: {"type": "textfield", "maxlength": 100, "validation": "email"},
        lambda i: {"type": "textfield", "maxlength": 20, "validation": "phone"},
        lambda i: {"type": "textfield", "maxlength": 10, "validation": "postalCode"},
        lambda i: {"type": "select", "options": "states"},
        lambda i: {"type": "radios", "options": [{"val": str(v), "label": f"${v}"} for v in (10, 25, 50, 100)]},
        lambda i: {"type": "checkboxes", "options": ["Air", "Water", "Land", "Climate"]},
        lambda i: {"type": "textarea", "maxlength": 1000},
        lambda i: {"type": "checkbox"},
        lambda i: {"type": "number", "valueMin": 0, "valueMax": 1000},
        lambda i: {"type": "date"},
    ]
    fieldsets = []
    per_set = 20
    for s in range(0, n, per_set):
        children = []
        for i in range(s, min(n, s + per_set)):
            element = shapes[i % len(shapes)](i)
            children.append({"name": f"Field{i:03d}", "title": f"Field {i}", **element})
        fieldsets.append({"type": "fieldset", "name": f"Set{s // per_set}", "title": f"Set {s // per_set}",
                          "children": children})
    return {"formId": "bench-200", "title": "Bench", "type": "PetitionForm",
            "form_elements": [*fieldsets, {"type": "hidden", "name": "Source", "value": "bench"},
                              {"type": "submit", "name": "Submit", "title": "Go"}]}


def definition_to_schema(runs: int) -> dict[str, Any]:
    """Median time of NGP definition JSON -> Definition -> schema class -> schema instance (as Form.loaded does)."""
    from formrelay.forms.fields import build_schema
    from formrelay.providers.ngp import definition_from_ngp

    doc = ngp_definition_doc(200)
    parts: dict[str, list[float]] = {"definition": [], "build_schema": [], "instantiate": [], "total": []}
    fields = 0
    for i in range(runs + 3):
        t0 = time.perf_counter()
        definition = definition_from_ngp(doc)
        t1 = time.perf_counter()
        schema_cls = build_schema("bench", definition.fields)
        t2 = time.perf_counter()
        schema = schema_cls()
        t3 = time.perf_counter()
        fields = len(schema.fields)
        if i >= 3:  # the first runs warm caches
            parts["definition"].append(t1 - t0)
            parts["build_schema"].append(t2 - t1)
            parts["instantiate"].append(t3 - t2)
            parts["total"].append(t3 - t0)
    medians = {f"{k}_ms": round(statistics.median(v) * 1000, 3) for k, v in parts.items()}
    return {"fields": fields, "runs": runs, **medians}


def _package(filename: str, function: str) -> str:
    """Where a profiled function lives: formrelay.<module>, a site-packages distribution, stdlib, or socket I/O."""
    if filename == "~":
        if any(word in function for word in ("recv", "send", "connect", "socket", "poll", "select")):
            return "socket I/O (includes waiting for the fake)"
        return "builtins"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "formrelay" in parts:  # formrelay.delivery.relay, formrelay.core.config, ... (the last "formrelay"
        top = len(parts) - 1 - parts[::-1].index("formrelay")  # is the package, the checkout may share its name)
        return ".".join((*parts[top:-1], path.stem))
    if "frozen" in filename:
        return "stdlib " + filename.strip("<>").replace("frozen ", "")
    return "stdlib " + (parts[-2] if parts[-1] == "__init__.py" else path.stem)


def _profiled(clients: dict[str, Any], count: int, chunk: int = 50) -> dict[str, tuple[Any, float]]:
    """cProfile of `count` NGP posts through each Flask test client, alternating in chunks so that drift on a
    shared machine hits all alike; {name: (profile, ms per post)}."""
    import cProfile

    for client in clients.values():
        for _ in range(20):
            client.post("/v1/forms/join", json=NGP_BODY)
    profilers = {name: cProfile.Profile() for name in clients}
    spent = dict.fromkeys(clients, 0.0)
    done = 0
    while done < count:
        n = min(chunk, count - done)
        for name, client in clients.items():
            profiler = profilers[name]
            t0 = time.perf_counter()
            profiler.enable()
            try:
                for _ in range(n):
                    response = client.post("/v1/forms/join", json=NGP_BODY)
                    if response.status_code != 200:
                        raise RuntimeError(f"profiled post to {name} answered {response.status_code}")
            finally:
                profiler.disable()
            spent[name] += time.perf_counter() - t0
        done += n
    return {name: (profilers[name], spent[name] / count * 1000) for name in clients}


def _by_function(relay: Any, forwarder: Any, count: int, top: int = 25) -> list[tuple[str, float, float]]:
    import pstats

    def own(profiler: Any) -> dict[str, float]:
        raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        return {f"{fn.split('site-packages/')[-1].split('/lib/python3')[-1]}:{line} {func}": v[2] * 1000 / count
                for (fn, line, func), v in raw.items()}

    r, f = own(relay), own(forwarder)
    rows = [(name, r.get(name, 0.0), f.get(name, 0.0)) for name in set(r) | set(f)]
    return sorted(rows, key=lambda row: row[1] - row[2], reverse=True)[:top]


def _relay_steps(profiler: Any, count: int, top: int = 25) -> list[tuple[str, float]]:
    """Cumulative ms per submission of the relay's own functions and the libraries it adds over the forwarder."""
    import pstats

    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    picked = []
    for (filename, line, function), v in raw.items():
        if "/formrelay/" in filename or any(f"/{lib}/" in filename for lib in (
                "flask_limiter", "limits", "marshmallow", "email_validator", "prometheus_client")):
            where = filename.split("site-packages/")[-1].split("/formrelay/")[-1]
            picked.append((f"{where}:{line} {function}", v[3] * 1000 / count))
    return sorted(picked, key=lambda row: row[1], reverse=True)[:top]


def _ms_by_package(profiler: Any, count: int) -> Counter[str]:
    import pstats

    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out: Counter[str] = Counter()
    for (filename, _, function), v in raw.items():
        out[_package(filename, function)] += v[2] * 1000 / count
    return out


def profile_submissions(fake: str, workdir: Path, count: int, out: Path, schema_too: bool) -> dict[str, Any]:
    """cProfile of in-process NGP submissions through the relay and through the forwarder (Flask test clients,
    the running gunicorn fake upstream), with the relay's own time per package set against the forwarder's."""
    import importlib.util
    import io
    import logging
    import pstats

    # Log lines go to a file, as they would under gunicorn, instead of this terminal.
    logging.basicConfig(filename=str(workdir / "profile.log"), level=logging.WARNING)
    from formrelay import create_app

    cfg = relay_config(fake, workdir)
    cfg["queue"] = {"path": str(workdir / "profile-queue.sqlite3")}
    app = create_app(cfg)
    os.environ["FORWARDER_UPSTREAM"] = f"{fake}/ngp/v2/forms/demo-petition"
    spec = importlib.util.spec_from_file_location("bench_forwarder", HERE / "forwarder.py")
    assert spec is not None and spec.loader is not None
    forwarder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(forwarder)
    try:
        profiled = _profiled({"relay": app.test_client(), "forwarder": forwarder.app.test_client()}, count)
    finally:
        app.extensions["formrelay"].close()
    (relay_prof, relay_ms), (fwd_prof, fwd_ms) = profiled["relay"], profiled["forwarder"]

    relay_pkg, fwd_pkg = _ms_by_package(relay_prof, count), _ms_by_package(fwd_prof, count)
    rows = sorted(((name, relay_pkg[name], fwd_pkg[name]) for name in set(relay_pkg) | set(fwd_pkg)),
                  key=lambda row: row[1] - row[2], reverse=True)

    buf = io.StringIO()
    buf.write(f"cProfile of {count} NGP submissions each through the relay and through the minimal forwarder, "
              f"in-process (Flask test client -> app -> requests -> the gunicorn fake provider on loopback), "
              f"alternating in chunks of 50.\n"
              f"Under the profiler: relay {relay_ms:.2f} ms, forwarder {fwd_ms:.2f} ms per submission.\n\n"
              f"== own time per submission by package, ms (sorted by relay - forwarder) ==\n"
              f"{'relay':>8}{'forwarder':>10}{'extra':>8}  package\n")
    buf.writelines(f"{r:8.3f}{f:10.3f}{r - f:8.3f}  {name}\n" for name, r, f in rows if r >= 0.0005 or f >= 0.0005)
    buf.write("\n== own time per submission by function, ms: the 25 largest relay - forwarder differences ==\n"
              f"{'relay':>8}{'forwarder':>10}{'extra':>8}  function\n")
    buf.writelines(f"{r:8.3f}{f:10.3f}{r - f:8.3f}  {name}\n"
                   for name, r, f in _by_function(relay_prof, fwd_prof, count))
    buf.write("\n== relay: its own steps and the libraries it adds, cumulative ms per submission ==\n")
    buf.writelines(f"{ms:8.3f}  {name}\n" for name, ms in _relay_steps(relay_prof, count))
    buf.write("\n== relay: top 25 by cumulative time ==\n")
    pstats.Stats(relay_prof, stream=buf).sort_stats("cumulative").print_stats(25)
    buf.write("\n== relay: top 25 by own time ==\n")
    pstats.Stats(relay_prof, stream=buf).sort_stats("tottime").print_stats(25)
    buf.write("\n== forwarder: top 25 by own time ==\n")
    pstats.Stats(fwd_prof, stream=buf).sort_stats("tottime").print_stats(25)
    if schema_too:
        import cProfile

        from formrelay.forms.fields import build_schema
        from formrelay.providers.ngp import definition_from_ngp

        doc = ngp_definition_doc(200)
        p2 = cProfile.Profile()
        p2.enable()
        for _ in range(20):
            build_schema("bench", definition_from_ngp(doc).fields)()
        p2.disable()
        buf.write("\n== 200-field NGP definition -> schema class -> instance (20 runs), top 25 by cumulative time ==\n")
        pstats.Stats(p2, stream=buf).sort_stats("cumulative").print_stats(25)
    out.write_text(buf.getvalue())
    return {"relay_ms": round(relay_ms, 3), "forwarder_ms": round(fwd_ms, 3),
            "extra_ms_by_package": [(name, round(r - f, 3)) for name, r, f in rows],
            "relay_steps_ms": [(name, round(ms, 3)) for name, ms in _relay_steps(relay_prof, count)]}

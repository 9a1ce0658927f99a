"""Benchmark: the Gradio demo under load — N concurrent API clients, M predictions each.

Starts `demo/app.py --bundle BUNDLE` on a free port (or uses `--url` of one
already running), sends one warm-up request, then runs `--clients` threads at
once, each with its own gradio_client.Client, each sending `--requests`
slices to the `/predict` endpoint: 10 phantoms, and `--real` public figshare
slices (CC BY 4.0) where ../shared/data holds them. Real slices matter: the
brain-MRI check settles every phantom at 128 px, but about 14 % of real
slices need its 256 px pass. A request is
an error when it raises or when its status output (the page's error line) is
not empty. Prints clients, requests, errors, latency median and p95 (ms, as a
client sees it: queue wait + work + transfer), throughput (req/s over the
whole run) and the server's own median processing time (its timing line);
writes bench/results/bench_demo.json. Exits 1 when any request failed.

The clients share the server's cores, so they do no needless work: no TLS
verification on a plain http:// address (gradio_client would otherwise load
the whole certificate bundle for every call, about 0.2 s of CPU a request)
and no analytics.

The page queues one slice at a time (default_concurrency_limit=1), so latency
grows with the number of clients while throughput stays that of one worker.
Each run benches two servers one after the other on the same machine: the
baseline (`--ood off --gradcam-inline`: the demo before issue 33, Grad-CAM
in every answer and no brain-MRI check) and today's defaults (Grad-CAM on
demand, the full brain-MRI check, downloads written). Target: p95 at most
1.5 s for 8 clients x 5 requests with the default bundle.

    python bench/bench_demo.py [--bundle artifacts/bundle] [--clients 8] [--requests 5]
    python bench/bench_demo.py --smoke            # 2 clients x 2 requests: a quick check
    python bench/bench_demo.py --url http://127.0.0.1:7860/
    python bench/bench_demo.py --settings "--ood rules"      # one server with these demo/app.py options
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo import serve  # noqa: E402
from lib.acquire import phantom  # noqa: E402
from lib.common.io import write_json_atomic, write_png  # noqa: E402

OUTPUTS = ("crop", "verdict", "overlay", "downloads", "timing", "status")  # what /predict returns to a client
SLICES = 10  # distinct phantom slices, half with a tumour
STARTUP_TIMEOUT = 120.0
BASELINE = "--ood off --gradcam-inline"  # the demo before issue 33: Grad-CAM in every answer, no brain-MRI check
TARGET_P95_MS = 1500


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "bundle")
    p.add_argument("--url", default="", help="bench this running demo instead of starting one")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (threads, one Client each)")
    p.add_argument("--requests", type=int, default=5, help="predictions per client")
    p.add_argument("--smoke", action="store_true", help="quick check: --clients 2 --requests 2")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    p.add_argument("--real", type=int, default=10, help="figshare slices added where ../shared/data has them")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--timeout", type=float, default=STARTUP_TIMEOUT, help="seconds to wait for the server")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "bench_demo.json")
    p.add_argument("--settings", action="append", default=None,
                   help="demo/app.py options of one server to bench (repeatable); default: the baseline "
                        f"{BASELINE!r} (the demo before issue 33) and today's defaults, in the same run")
    args = p.parse_args()
    if args.smoke:
        args.clients, args.requests = 2, 2
    if args.clients < 1 or args.requests < 1:
        p.error("--clients and --requests must be at least 1")

    settings = [""] if args.url else (args.settings or [BASELINE, ""])
    print(f"slices: {SLICES} phantoms + {len(real_slices(args.shared, args.real))} real (figshare)")
    runs = {}
    for setting in settings:
        with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp_name:
            tmp = Path(tmp_name)
            slices = write_slices(tmp / "slices", SLICES, args.seed) + real_slices(args.shared, args.real)
            server = None
            try:
                if args.url:
                    url = args.url
                else:
                    server, url = serve.start(args.bundle, tmp, args.timeout, tuple(setting.split()))
                runs[setting or "defaults"] = run_load(url, slices, args.clients, args.requests, tmp / "downloads")
            finally:
                if server is not None:
                    serve.stop(server)
        print_table(runs[setting or "defaults"], args, setting or "defaults")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    write_json_atomic(args.json, {"machine": platform.platform(), "cores": os.cpu_count(), "load_average": load,
                                  "slices": {"phantoms": SLICES, "real": len(real_slices(args.shared, args.real))},
                                  "bundle": str(args.bundle) if not args.url else None, "url": args.url or None,
                                  "target_p95_ms": TARGET_P95_MS, "runs": runs})
    print(f"wrote {args.json}")
    return 1 if any(run["errors"] for run in runs.values()) else 0


def write_slices(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"phantom_{i}.png"
        write_png(path, phantom.make_slice(rng, 1 if i % 2 == 0 else 0).image)
        paths.append(path)
    return paths



def real_slices(shared: Path, n: int) -> list[Path]:
    """`n` figshare slices spread evenly over the set (none where ../shared/data lacks it)."""
    index = shared / "figshare_seg" / "index.csv"
    if n <= 0 or not index.is_file():
        return []
    names = sorted(line.split(",")[0] for line in index.read_text().splitlines()[1:] if line)
    picked = [names[round(i * (len(names) - 1) / max(n - 1, 1))] for i in range(min(n, len(names)))]
    return [shared / "figshare_seg" / "images" / name for name in picked]


def one_request(client, path: Path) -> dict:  # noqa: ANN001 - gradio_client.Client
    """One /predict call: latency, and the error if it raised or the page's status line says one."""
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        result = client.predict(handle_file(str(path)), api_name="/predict")
    except Exception as err:  # noqa: BLE001 - counted, not fatal
        return {"latency_s": time.perf_counter() - start, "error": f"{type(err).__name__}: {err}"[:300]}
    latency = time.perf_counter() - start
    if not isinstance(result, (tuple, list)) or len(result) != len(OUTPUTS):
        return {"latency_s": latency, "error": f"unexpected result shape: {type(result).__name__} {result!r}"[:300]}
    out = dict(zip(OUTPUTS, result))
    if out["status"]:
        return {"latency_s": latency, "error": f"status: {out['status']}"[:300]}
    if "Tumour probability" not in (out["verdict"] or ""):
        return {"latency_s": latency, "error": f"no verdict: {out['verdict']!r}"[:300]}
    found = re.search(r"Processed in (\d+) ms", out["timing"] or "")
    return {"latency_s": latency, "error": None, "server_ms": int(found.group(1)) if found else None}


def run_load(url: str, slices: list[Path], clients: int, requests: int, downloads: Path) -> dict:
    from gradio_client import Client

    def new_client(i: int) -> Client:
        folder = downloads / f"client_{i}"
        folder.mkdir(parents=True, exist_ok=True)
        return Client(url, verbose=False, download_files=str(folder), analytics_enabled=False,
                      ssl_verify=not url.startswith("http://"))

    try:
        warm_client = new_client(-1)
    except Exception as err:  # noqa: BLE001 - nothing to bench
        raise SystemExit(f"error: no Gradio app at {url} ({type(err).__name__}: {err})") from None
    warm = one_request(warm_client, slices[0])  # first call pays lazy set-up; not counted
    error = f" (error: {warm['error']})" if warm["error"] else ""
    print(f"warm-up request: {1000 * warm['latency_s']:.0f} ms{error}")

    results: list[list[dict]] = [[] for _ in range(clients)]
    connect_s = [0.0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        tic = time.perf_counter()
        try:
            client = new_client(i)
        except Exception as err:  # noqa: BLE001 - every request of this client counts as failed
            client, failure = None, f"Client(): {type(err).__name__}: {err}"[:300]
        connect_s[i] = time.perf_counter() - tic
        barrier.wait()
        for k in range(requests):
            if client is None:
                results[i].append({"latency_s": 0.0, "error": failure})
                continue
            results[i].append(one_request(client, slices[(i * requests + k) % len(slices)]))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start

    flat = [r for per_client in results for r in per_client]
    ok = [r for r in flat if r["error"] is None]
    latency_ms = np.array([1000 * r["latency_s"] for r in ok])
    server_ms = [r["server_ms"] for r in ok if r.get("server_ms") is not None]
    errors = [r["error"] for r in flat if r["error"] is not None]
    return {
        "clients": clients,
        "requests_per_client": requests,
        "requests": len(flat),
        "errors": len(errors),
        "error_examples": errors[:5],
        "latency_ms_median": float(np.median(latency_ms)) if ok else None,
        "latency_ms_p95": float(np.percentile(latency_ms, 95)) if ok else None,
        "latency_ms_max": float(latency_ms.max()) if ok else None,
        "server_ms_median": float(np.median(server_ms)) if server_ms else None,
        "throughput_rps": len(ok) / wall if wall > 0 else None,
        "wall_s": wall,
        "warmup_ms": 1000 * warm["latency_s"],
        "client_connect_ms_median": float(1000 * np.median(connect_s)),
        "latencies_ms": [round(1000 * r["latency_s"], 1) for r in flat],
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(s: dict, args: argparse.Namespace, setting: str = "defaults") -> None:
    where = args.url or f"demo/app.py --bundle {args.bundle} ({setting})"
    load = ", load average {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    print(f"\nGradio demo under load: {where} ({os.cpu_count()} cores{load})")
    print(f"{'clients':>8}{'requests':>9}{'errors':>7}{'median ms':>11}{'p95 ms':>9}{'req/s':>7}{'server ms':>11}")
    print(f"{s['clients']:>8}{s['requests']:>9}{s['errors']:>7}{_fmt(s['latency_ms_median']):>11}"
          f"{_fmt(s['latency_ms_p95']):>9}{_fmt(s['throughput_rps'], 2):>7}{_fmt(s['server_ms_median']):>11}")
    print(f"wall {s['wall_s']:.1f} s; warm-up {s['warmup_ms']:.0f} ms; Client() {s['client_connect_ms_median']:.0f} ms "
          f"median; server ms = the page's own 'Processed in' time (median)")
    for example in s["error_examples"]:
        print(f"  error: {example}")


if __name__ == "__main__":
    sys.exit(main())

"""Interactive requests beside background captions: follow-up time to first token, mixed-load total, memory.

On one model (default the synthetic ``real-shape-4l``), each server a whole process on 127.0.0.1:

(a) The time to first token of an interactive follow-up (a second turn about image A, whose image prefix is
    cached by a first turn sent before) sent while a background full-detail caption of another 672x672
    image B is in its image prefill. llava-edge twice in the same process, alternating per run: B marked
    background (``X-Llava-Edge-Priority: background``) and B unmarked (arrival order). The follow-up goes
    out as soon as B's stream reports the CLIP encode of its 2nd tile (``stream_options.include_progress``),
    so it arrives while that tile's first prefill batch runs. Then ``llama-server -np 2`` (same GGUF pair,
    2 slots of 4096, ``-fa on``, its OpenAI chat route with base64 image_url), which streams no progress:
    the follow-up goes out after the median delay the llava-edge runs measured. After each contended
    follow-up the same kind of follow-up is sent alone (quiet), so the wait B added is contended - quiet.
    One prefill batch's time (``n_batch`` 512 tokens) comes from B's prefill progress (compute seconds per
    token x 512); the target is a follow-up wait of at most two of them.
(b) A mixed load on the llava-edge server: 4 background captions sent at once and 4 interactive follow-ups
    arriving while they run (follow-up k at (k + 0.5) captions' time), against the same kind of requests
    (new images, so no prefix is cached) sent one after another. Target: the total within 3 % of serial.
(c) Memory: the server's RSS loaded, after an Ollama unload (``POST /api/generate`` with ``keep_alive: 0``
    and no prompt), and after the reload; the reload time (a short text-only ``/api/generate`` after the
    unload against the same warm).

    benchmarks/build_llama_server.sh "$(which python)"     # prints the llama-server path
    LLAVA_EDGE_CACHE=~/.cache/llava-edge python benchmarks/scheduling.py --llama-server "$LLAMA_SERVER"

Writes ``<out>.json`` (every sample) and ``<out>.md`` (medians, the machine described). About 25 minutes
with 3 runs on a 2-core machine; run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from chat_followup import noise_png
from sched_clients import Stream, llama_server, llava_edge_server, position, stage_done, user_turn

from llava_edge import paths
from llava_edge.bench.machine_facts import describe_machine
from llava_edge.host.cores import default_threads
from llava_edge.models.synthetic import build_synthetic_pair
from llava_edge.runtime.quantize import quantize_gguf

N_BATCH = 512
"""llava-edge's prefill batch (``RuntimeOptions.n_batch``)."""
CAPTION = "Describe this image in detail."
QUESTIONS = ("What colours stand out?", "Is there any text?", "What is in the top left corner?",
             "Describe the lighting.", "What is the main subject?", "Are there people?", "Any animals?",
             "What mood does it have?", "Name three objects.", "Which season is it?")
GIB = 2**30


class Session:
    """One server under test with image A's first turn done, so follow-ups about A hit a cached prefix."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url, self.args, self.asked = url, args, 0
        first = user_turn(noise_png(1000), CAPTION)
        answer = Stream(url, first, args.followup_tokens).start().join().text
        self.history = [*first, {"role": "assistant", "content": answer}]
        self.seed = 2000

    def followup(self) -> Stream:
        """A follow-up about A (each with a new question), not started."""
        self.asked += 1
        question = f"{QUESTIONS[self.asked % len(QUESTIONS)]} ({self.asked})"
        return Stream(self.url, [*self.history, {"role": "user", "content": question}], self.args.followup_tokens)

    def caption(self, background: bool) -> Stream:
        """A full-detail caption of a new 672x672 image, not started."""
        self.seed += 1
        return Stream(self.url, user_turn(noise_png(self.seed), CAPTION), self.args.max_tokens, background)


def second_tile_encoded(stream: Stream) -> bool:
    return stage_done(stream, "encode") >= 2


def contended(session: Session, background: bool, trigger: Callable[[Stream], None]) -> dict[str, Any]:
    """One run of (a): caption B, the follow-up once ``trigger`` returns, then a follow-up alone."""
    caption = session.caption(background).start()
    trigger(caption)
    at = position(caption)
    follow = session.followup().start().join()
    caption.join()
    quiet = session.followup().start().join()
    return {"sent_after_s": follow.sent - caption.sent, "caption_position": at, "ttft_s": follow.ttft_s,
            "quiet_ttft_s": quiet.ttft_s, "wait_s": follow.ttft_s - quiet.ttft_s,
            "followup_done_before_caption": (follow.ended or 0) < (caption.ended or 0),
            "caption_total_s": caption.total_s, "caption_batch_s": batch_seconds(caption),
            "caption_timings": caption.final.get("timings")}


def batch_seconds(caption: Stream) -> float | None:
    """Seconds of one ``N_BATCH``-token prefill batch: B's prefill compute seconds per token x N_BATCH."""
    prefill = [data for _, data in caption.progress if data.get("stage") == "prefill" and data["done"]]
    return prefill[-1]["elapsed_s"] / prefill[-1]["done"] * N_BATCH if prefill else None


def mixed(session: Session, arrivals: list[float]) -> dict[str, Any]:
    """(b), mixed: the background captions at once, a follow-up at each arrival time; the whole span."""
    started = time.perf_counter()
    captions = []
    for _ in range(session.args.captions):
        captions.append(session.caption(True).start())
        time.sleep(0.05)  # the captions queue in a known order
    followups = []
    for arrival in arrivals:
        time.sleep(max(0.0, started + arrival - time.perf_counter()))
        followups.append(session.followup().start())
    for stream in [*captions, *followups]:
        stream.join()
    ended = max(stream.ended or 0 for stream in [*captions, *followups])
    return {"total_s": ended - started, "followup_ttft_s": [stream.ttft_s for stream in followups],
            "caption_total_s": [stream.total_s for stream in captions]}


def serial(session: Session, followups: int) -> dict[str, Any]:
    """(b), serial: the same kinds of requests one after another, in the mixed load's arrival order."""
    started = time.perf_counter()
    streams = [session.caption(True) for _ in range(session.args.captions)]
    streams += [session.followup() for _ in range(followups)]
    for stream in streams:
        stream.start().join()
    return {"total_s": time.perf_counter() - started, "request_s": [stream.total_s for stream in streams]}


def generate(url: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/generate", json={"model": "llava", "stream": False, **fields}, timeout=600)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def timed_text_turn(url: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = generate(url, prompt="Say hello.", options={"num_predict": 8, "temperature": 0})
    return time.perf_counter() - started, result


def memory_cycle(server: Any) -> dict[str, Any]:
    """(c): RSS loaded, unloaded, reloaded; the short request's time warm and after the unload."""
    warm_s, _ = timed_text_turn(server.url)
    loaded = server.rss_bytes()
    generate(server.url, keep_alive=0)
    deadline = time.monotonic() + 60
    while httpx.get(server.url + "/health").json().get("loaded") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    unloaded = server.rss_bytes()
    reload_s, result = timed_text_turn(server.url)
    return {"rss_loaded_gib": loaded / GIB, "rss_unloaded_gib": unloaded / GIB,
            "rss_reloaded_gib": server.rss_bytes() / GIB, "warm_request_s": warm_s,
            "reload_request_s": reload_s, "reload_extra_s": reload_s - warm_s,
            "load_duration_s": result.get("load_duration", 0) / 1e9}


def run_llava_edge(args: argparse.Namespace, report: dict[str, Any]) -> None:
    with llava_edge_server(args.model, args.port, cache=args.cache) as server:
        session = Session(server.url, args)
        report["llava_edge_idle_rss_gib"] = server.rss_bytes() / GIB
        for run in range(args.runs):
            for name, background in (("priorities", True), ("arrival order", False))[:: 1 if run % 2 == 0 else -1]:
                row = contended(session, background, lambda s: s.wait_for(second_tile_encoded))
                report["followup"].setdefault(f"llava-edge, {name}", []).append(row)
                print(f"(a) {name}: follow-up TTFT {row['ttft_s']:.2f} s (quiet {row['quiet_ttft_s']:.2f} s)"
                      f" sent {row['sent_after_s']:.1f} s into B at {row['caption_position']}", flush=True)
        caption_s = statistics.median(row["caption_total_s"] for rows in report["followup"].values() for row in rows)
        arrivals = [(k + 0.5) * caption_s for k in range(args.followups)]
        report["mixed_load"] = {"arrivals_s": arrivals, "mixed": [], "serial": []}
        for run in range(args.runs):
            for kind in ("mixed", "serial")[:: 1 if run % 2 == 0 else -1]:
                row = mixed(session, arrivals) if kind == "mixed" else serial(session, args.followups)
                report["mixed_load"][kind].append(row)
                print(f"(b) {kind}: {row['total_s']:.1f} s {json.dumps(row)}", flush=True)
        report["memory"] = [memory_cycle(server) for _ in range(args.runs)]
        print("(c)", json.dumps(report["memory"][-1]), flush=True)


def run_llama_server(args: argparse.Namespace, report: dict[str, Any], files: Any) -> None:
    rows = [row for name, rows in report["followup"].items() if name.startswith("llava-edge") for row in rows]
    delay = statistics.median(row["sent_after_s"] for row in rows)
    with llama_server(args.llama_server, files.model_path, files.mmproj_path, args.port + 1,
                      threads=default_threads()) as server:
        session = Session(server.url, args)
        for _ in range(args.runs):
            row = contended(session, False, lambda s: time.sleep(max(0.0, s.sent + delay - time.perf_counter())))
            report["followup"].setdefault("llama-server -np 2", []).append(row)
            print(f"(a) llama-server: follow-up TTFT {row['ttft_s']:.2f} s (quiet {row['quiet_ttft_s']:.2f} s)",
                  flush=True)
        report["llama_server_rss_gib"] = server.rss_bytes() / GIB


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Medians of (a), (b) and (c) and each target's verdict."""
    followup = {name: {key: median(rows, key) for key in ("ttft_s", "quiet_ttft_s", "wait_s", "sent_after_s",
                                                          "caption_total_s", "caption_batch_s")}
                for name, rows in report["followup"].items()}
    batches = [row["caption_batch_s"] for name, rows in report["followup"].items() if name.startswith("llava-edge")
               for row in rows if row["caption_batch_s"]]
    batch = statistics.median(batches) if batches else None
    prio = followup.get("llava-edge, priorities", {})
    out: dict[str, Any] = {"followup": followup, "batch_s": batch, "followup_target": {
        "goal": "follow-up wait (contended - quiet TTFT) <= 2 prefill batches",
        "met": None if batch is None or prio.get("wait_s") is None else prio["wait_s"] <= 2 * batch}}
    load = report.get("mixed_load")
    if load and load["mixed"] and load["serial"]:
        mixed_s, serial_s = median(load["mixed"], "total_s"), median(load["serial"], "total_s")
        assert mixed_s is not None and serial_s is not None
        out["mixed_load"] = {"mixed_s": mixed_s, "serial_s": serial_s, "mixed_over_serial": mixed_s / serial_s,
                             "met": mixed_s <= 1.03 * serial_s}
    if report.get("memory"):
        out["memory"] = {key: median(report["memory"], key) for key in report["memory"][0]}
    return out


def markdown(report: dict[str, Any]) -> str:
    s, machine = report["summary"], report["machine"]
    lines = [f"# Scheduling: interactive follow-ups beside background captions ({report['model']})", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_total_gib']} GiB RAM; "
             f"{machine['os']}; llava-edge {report['llava_edge_commit']}; medians of {report['runs']} runs; "
             f"1-minute load average {report['loadavg_start']:.1f} at the start, {report['loadavg_end']:.1f} at the "
             "end (other processes share the cores: above ~1 the figures are slowed).", "",
             "## (a) Follow-up time to first token while a background caption is in its image prefill", "",
             "| server | TTFT s | quiet TTFT s | wait s | sent after s | caption s |", "|---|---|---|---|---|---|"]
    for name, row in s["followup"].items():
        lines.append(f"| {name} | {_f(row['ttft_s'])} | {_f(row['quiet_ttft_s'])} | {_f(row['wait_s'])} | "
                     f"{_f(row['sent_after_s'], 1)} | {_f(row['caption_total_s'], 1)} |")
    batch = s["batch_s"]
    lines += ["", f"One prefill batch ({N_BATCH} tokens): {_f(batch)} s; target wait <= "
              f"{_f(2 * batch if batch else None)} s: {_verdict(s['followup_target']['met'])}.", ""]
    if "mixed_load" in s:
        m = s["mixed_load"]
        lines += ["## (b) Mixed load", "", f"{report['captions']} background captions + {report['followups']} "
                  f"follow-ups: mixed {_f(m['mixed_s'], 1)} s, serial {_f(m['serial_s'], 1)} s, "
                  f"mixed / serial {m['mixed_over_serial']:.3f} (target <= 1.03: {_verdict(m['met'])}).", ""]
    if "memory" in s:
        m = s["memory"]
        lines += ["## (c) Idle unload and reload", "", "| RSS loaded GiB | after unload GiB | after reload GiB | "
                  "warm request s | after unload s | load_duration s |", "|---|---|---|---|---|---|",
                  f"| {_f(m['rss_loaded_gib'])} | {_f(m['rss_unloaded_gib'])} | {_f(m['rss_reloaded_gib'])} | "
                  f"{_f(m['warm_request_s'])} | {_f(m['reload_request_s'])} | {_f(m['load_duration_s'])} |", ""]
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "not measured"}[met]


def commit() -> str:
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return head.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic-real-shape-4l")
    parser.add_argument("--llama-server", help="llama-server binary (benchmarks/build_llama_server.sh); "
                                               "without it that row is left out")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens of each background caption")
    parser.add_argument("--followup-tokens", type=int, default=16)
    parser.add_argument("--captions", type=int, default=4)
    parser.add_argument("--followups", type=int, default=4)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scheduling-real-shape-4l"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers are stopped on the way out
    args.cache = str(paths.cache_dir())
    files = build_synthetic_pair(args.model.removeprefix("synthetic-"), quantize=quantize_gguf)
    report: dict[str, Any] = {"what": __doc__.splitlines()[0], "model": args.model, "runs": args.runs,
                              "captions": args.captions, "followups": args.followups, "max_tokens": args.max_tokens,
                              "followup_tokens": args.followup_tokens, "llava_edge_commit": commit(),
                              "machine": describe_machine(bandwidth=False), "followup": {},
                              "loadavg_start": os.getloadavg()[0]}
    run_llava_edge(args, report)
    if args.llama_server:
        try:
            run_llama_server(args, report, files)
        except RuntimeError as err:  # keep what llava-edge measured
            report["llama_server_error"] = str(err)[-2000:]
    report["loadavg_end"] = os.getloadavg()[0]
    report["summary"] = summary(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

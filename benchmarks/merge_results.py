"""Merge benchmark results into one report and re-render its JSON, markdown and chart.

    python benchmarks/merge_results.py BASE.json [MORE.json ...] --out DIR --name STEM
        [--keep-replaced] [--bandwidth-gbs X --bandwidth-note TEXT]

Results from MORE files replace BASE's results of the same configuration name (a re-measurement, e.g.
of a run during which the machine was busy); with ``--keep-replaced`` the replaced result stays in the
report, renamed "<name> (replaced; others used N cores)". ``--bandwidth-gbs`` sets the machine's measured
bandwidth (e.g. re-measured on a quiet machine) and recomputes every decode ceiling.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from llava_edge.bench.report import load_report, write_outputs
from llava_edge.bench.runner import add_decode_ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("more", nargs="*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--keep-replaced", action="store_true")
    parser.add_argument("--bandwidth-gbs", type=float)
    parser.add_argument("--bandwidth-note", default="")
    args = parser.parse_args()
    report = load_report(args.base)
    for path in args.more:
        for result in load_report(path).results:
            old = report.result(result.config.name)
            if old is None:
                report.results.append(result)
                continue
            index = report.results.index(old)
            if args.keep_replaced:  # keep it, after the new one, under another name
                others = max(run["others_cores"] for run in old.environment["runs"])
                old.config = replace(old.config, name=f"{old.config.name} (replaced; others used {others} cores)")
                report.results.insert(index, result)
            else:
                report.results[index] = result
    if args.bandwidth_gbs:
        report.machine["bandwidth_gbs"] = args.bandwidth_gbs
        report.machine["bandwidth_note"] = args.bandwidth_note
        for result in report.results:
            add_decode_ceiling(result, args.bandwidth_gbs)
    for kind, path in write_outputs(report, args.out, args.name).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()

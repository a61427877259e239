"""The evaluation chart: quality loss (mean KL) against time per caption, one point per variant and detail,
marker area proportional to peak RSS (labelled in GiB), and the Pareto front of each detail drawn as a
line: the variants no other one beats on both time and quality loss.

Needs matplotlib, from the ``bench`` extra (``pip install 'llava-edge[bench]'``), imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava_edge.errors import MissingExtraError
from llava_edge.evaluation.runner import EvalReport

GIB = 2**30
MARKERS = {"low": "o", "high": "s", "auto": "^"}


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points (time, loss, name) that no other point beats on both, fastest first."""
    front: list[tuple[float, float, str]] = []
    for point in sorted(points):
        if not front or point[1] < front[-1][1]:
            front.append(point)
    return front


def draw_chart(report: EvalReport, path: str | Path) -> Path:
    """Draw the chart into ``path`` (PNG).

    Raises:
        MissingExtraError: matplotlib is missing; the message says how to install it.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 6))
    largest = max((variant.peak_rss_bytes for variant in report.variants), default=1) or 1
    smallest_kl = min((variant.quality[detail]["kl_mean"] for variant in report.variants
                       for detail in report.settings["details"] if variant.quality.get(detail, {}).get("kl_mean")),
                      default=1e-6)
    for detail in report.settings["details"]:
        points = _points(report, detail)
        if not points:
            continue
        sizes = [60 + 600 * rss / largest for _, _, _, rss in points]
        dots = axes.scatter([p[0] for p in points], [p[1] for p in points], s=sizes, alpha=0.55,
                            marker=MARKERS.get(detail, "o"), label=f"detail={detail}")
        for time_s, kl, name, rss in points:
            axes.annotate(f"{name}\n{rss / GIB:.2f} GiB", (time_s, kl), fontsize=7, xytext=(6, 4),
                          textcoords="offset points")
        front = pareto_front([(p[0], p[1], p[2]) for p in points])
        axes.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", linewidth=1,
                  color=dots.get_facecolor()[0][:3], label=f"Pareto front, detail={detail}")
    axes.set_yscale("symlog", linthresh=smallest_kl)
    axes.set_xlabel("time per caption, s (median, model load excluded)")
    axes.set_ylabel(f"mean KL vs {report.reference}, nats/token (symlog)")
    axes.set_title(f"Quality loss against time per caption; marker area = peak RSS — {report.machine.get('cpu', '')}",
                   fontsize=9)
    if any("stand-in" in variant.label for variant in report.variants):
        figure.text(0.01, 0.01, "* stand-in: the closest type today's quantizer makes (see the report)", fontsize=7)
    axes.legend(fontsize=8, markerscale=0.4)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def _points(report: EvalReport, detail: str) -> list[tuple[float, float, str, int]]:
    """(time per caption, mean KL, label, peak RSS) of every variant measured at ``detail``."""
    points = []
    for variant in report.variants:
        quality, speed = variant.quality.get(detail, {}), variant.speed.get(detail, {})
        if "kl_mean" in quality and "total_s" in speed:
            short = variant.label.split(" (")[0] + ("*" if "stand-in" in variant.label else "")
            if variant.image_tokens is not None:
                short += f" @{variant.image_tokens} {variant.token_selection}"
            points.append((speed["total_s"], quality["kl_mean"], short, variant.peak_rss_bytes))
    return points


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingExtraError("The eval chart needs matplotlib: pip install 'llava-edge[bench]'") from err
    return plt

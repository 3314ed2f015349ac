"""The analysis as a rich table (terminal), a Markdown report and PNG plots (matplotlib, Agg).

:func:`write_report` writes into a folder: ``report.md``, ``analysis.json``,
``effects.png`` (difference to control with its interval, per metric),
``variants.png`` (each variant's mean with its interval) and ``sequential.png``
(the always-valid p-value at each look). Files are written atomically.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from tlrec.services.ab.analysis import Analysis
from tlrec.services.ab.outcomes import METRICS
from tlrec.files import write_bytes_atomic

logger = logging.getLogger(__name__)

METRIC_LABELS = {"ctr": "CTR (clicks / exposures)", "conversion": "conversion", "value_per_user": "value per user"}


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None or p != p:
        return "-"
    return f"{p:.2e}" if p < 1e-4 else f"{p:.4f}"


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:+.2f}%"


def _share(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- terminal


def rich_tables(analysis: Analysis) -> list[Any]:
    """Variants and effects as rich tables, plus the SRM line (for the CLI)."""
    from rich.table import Table
    from rich.text import Text

    srm = Text(f"SRM check: chi2 {analysis.srm_chi2:.2f}, p {_p(analysis.srm_p_value)} -> "
               + ("ALERT: the split does not match the weights; do not trust the effects"
                  if analysis.srm_alert else "ok"), style="bold red" if analysis.srm_alert else "green")
    variants = Table(title=f"experiment {analysis.experiment}: variants")
    for col in ("variant", "users", "share (weight)", "exposures", *METRICS):
        variants.add_column(col, justify="left" if col == "variant" else "right")
    for v in analysis.variants:
        variants.add_row(v.variant, str(v.users), f"{v.share:.4f} ({v.weight:g})", str(v.exposures),
                         *(f"{_num(v.metrics[m].mean)} [{_num(v.metrics[m].ci_low)}, {_num(v.metrics[m].ci_high)}]"
                           for m in METRICS))
    effects = Table(title=f"difference to control ({analysis.control}), {100 * (1 - analysis.alpha):g}% intervals"
                    + (f", CUPED with {analysis.covariate}" if analysis.cuped else ""))
    for col in ("variant", "metric", "diff", "interval", "relative", "p-value", "always-valid p",
                *(["variance cut"] if analysis.cuped else [])):
        effects.add_column(col, justify="left" if col in ("variant", "metric") else "right")
    for e in analysis.effects:
        style = "bold" if e.significant else ""
        effects.add_row(e.variant, e.metric, _num(e.diff), f"[{_num(e.ci_low)}, {_num(e.ci_high)}]",
                        _pct(e.rel_diff), _p(e.p_value), _p(e.sequential_p_value),
                        *([_share(e.variance_reduction)] if analysis.cuped else []), style=style)
    return [srm, variants, effects]


# --------------------------------------------------------------------------- markdown


def markdown(analysis: Analysis, title: str | None = None, images: bool = True) -> str:
    """The whole report as Markdown (links ``effects.png``, ``variants.png``, ``sequential.png``)."""
    a = analysis
    lines = [f"# {title or f'A/B test {a.experiment}'}", ""]
    lines += [f"- control: `{a.control}`; {a.users} users analysed"
              + (f" ({a.users_multiple_variants} users seen in several variants were left out)"
                 if a.users_multiple_variants else ""),
              f"- intervals: {100 * (1 - a.alpha):g}%, Welch t on per-user metrics"
              + (f"; CUPED with {a.covariate}" if a.cuped else ""),
              f"- sequential: normal-mixture mSPRT over {len(a.sequential['looks'])} looks "
              "(always-valid p-values: safe to watch while the test runs)", ""]
    lines += ["## Sample ratio", ""]
    verdict = ("**ALERT**: users per variant do not match the configured weights (p < "
               f"{a.srm_alpha:g}); the assignment or the logging is broken, do not trust the effects."
               if a.srm_alert else "ok: users per variant match the configured weights.")
    lines += [f"Chi-square {a.srm_chi2:.3f}, p = {_p(a.srm_p_value)}. {verdict}", ""]
    lines += ["## Variants", "", "| variant | users | share (weight) | exposures | "
              + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(METRICS)]
    for v in a.variants:
        cells = [f"{_num(v.metrics[m].mean)} [{_num(v.metrics[m].ci_low)}, {_num(v.metrics[m].ci_high)}]"
                 for m in METRICS]
        lines.append(f"| {v.variant} | {v.users} | {v.share:.4f} ({v.weight:g}) | {v.exposures} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"## Difference to control (`{a.control}`)", ""]
    head = "| variant | metric | diff | interval | relative | p-value | significant | always-valid p |"
    rule = "|---|---|---:|---|---:|---:|---|---:|"
    if a.cuped:
        head += " unadjusted interval | variance cut |"
        rule += "---|---:|"
    lines += [head, rule]
    for e in a.effects:
        row = (f"| {e.variant} | {e.metric} | {_num(e.diff)} | [{_num(e.ci_low)}, {_num(e.ci_high)}] | "
               f"{_pct(e.rel_diff)} | {_p(e.p_value)} | {'**yes**' if e.significant else 'no'} | "
               f"{_p(e.sequential_p_value)} |")
        if a.cuped and e.unadjusted is not None:
            row += (f" [{_num(e.unadjusted['ci_low'])}, {_num(e.unadjusted['ci_high'])}] | "
                    f"{_share(e.variance_reduction)} |")
        lines.append(row)
    for key, section in a.extra.items():
        if isinstance(section, dict) and "markdown" in section:
            lines += ["", section["markdown"]]
    if images:
        lines += ["", "## Plots", "", "![difference to control](effects.png)", "",
                  "![variants](variants.png)", "", "![always-valid p-values](sequential.png)"]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plots(analysis: Analysis) -> dict[str, bytes]:
    """PNG bytes of ``effects.png``, ``variants.png`` and ``sequential.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = analysis
    out: dict[str, bytes] = {}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 1.8 + 0.5 * max(1, len(a.variants) - 1)),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, metric in zip(axes[0], METRICS):
        rows = [e for e in a.effects if e.metric == metric]
        for y, e in enumerate(rows):
            colour = "tab:green" if e.significant and e.diff > 0 else "tab:red" if e.significant else "tab:gray"
            ax.errorbar([e.diff], [y], xerr=[[e.diff - e.ci_low], [e.ci_high - e.diff]], fmt="o", color=colour,
                        capsize=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), [e.variant for e in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(METRIC_LABELS[metric] + (" (CUPED)" if a.cuped else ""), fontsize=10)
        ax.set_xlabel(f"diff to {a.control}")
    fig.suptitle(f"{a.experiment}: difference to control, {100 * (1 - a.alpha):g}% intervals", fontsize=11)
    out["effects.png"] = _png(fig)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.2), squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], METRICS):
        for x, v in enumerate(a.variants):
            s = v.metrics[metric]
            ax.errorbar([x], [s.mean], yerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="o", capsize=4)
        ax.set_xticks(range(len(a.variants)), [v.variant for v in a.variants])
        ax.set_xlim(-0.5, len(a.variants) - 0.5)
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
    fig.suptitle(f"{a.experiment}: mean per variant", fontsize=11)
    out["variants.png"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    looks = a.sequential["users"]
    for variant, by_metric in a.sequential["p_values"].items():
        for metric, ps in by_metric.items():
            ax.plot(looks, [max(p, 1e-12) for p in ps], marker=".", label=f"{variant} / {metric}")
    ax.axhline(a.alpha, color="black", ls="--", lw=0.8, label=f"alpha {a.alpha:g}")
    ax.set_yscale("log")
    ax.set_xlabel("users exposed at the look")
    ax.set_ylabel("always-valid p-value")
    ax.set_title(f"{a.experiment}: sequential test (mSPRT)", fontsize=11)
    ax.legend(fontsize=8)
    out["sequential.png"] = _png(fig)
    plt.close(fig)
    return out


def write_report(analysis: Analysis, out_dir: str | Path, title: str | None = None) -> Path:
    """Write ``report.md``, ``analysis.json`` and the PNGs into ``out_dir``; returns the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in plots(analysis).items():
        write_bytes_atomic(out_dir / name, data)
    write_bytes_atomic(out_dir / "analysis.json",
                       (json.dumps(analysis.to_dict(), indent=2, allow_nan=False) + "\n").encode())
    report = out_dir / "report.md"
    write_bytes_atomic(report, markdown(analysis, title).encode("utf-8"))
    logger.info("wrote the report to %s", report)
    return report

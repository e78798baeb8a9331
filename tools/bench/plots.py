"""The plots of the benchmark reports: speed-up and file size against compression
(RESULTS.md), accuracy against latency and against file size (PARETO.md). matplotlib is
imported on first use, with the Agg backend.
"""
from __future__ import annotations

from pathlib import Path

# colour, marker, legend of each non-dense variant in the compression plots
VARIANT_STYLES = {"pruned": ("C0", "o", "(a) ours pruned"),
                  "pruned_sparse": ("C4", "^", "(a+) ours + sparse enc."),
                  "tfmot_sparse": ("C1", "s", "(b) tfmot sparse"),
                  "sparse": ("C2", "x", "(c) sparse fp32")}
# marker, colour of each source of Pareto points, by prefix
SOURCE_STYLES = {"portfolio": ("o", "C0"), "baseline_e": ("s", "C1"), "tfmot": ("x", "C2"),
                 "reconvene": ("^", "C3"), "mct": ("D", "C4"), "arm:": ("v", "C5"),
                 "recipe:": ("P", "C3")}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _family_title(fam: str, f: dict) -> str:
    return fam + (" (synthetic)" if f["kind"] == "synthetic" else " (trained)")


def plot(r: dict, out: Path) -> list:
    """RESULTS.md's plots of results.json `r` into `out`; the files written."""
    dep = r.get("deployment") or {}
    if not dep:
        return []
    return [plot_speedup(dep, out / "speedup_vs_compression.png"),
            plot_size(dep, out / "size_vs_compression.png")]


def plot_speedup(dep: dict, path: Path) -> Path:
    """Measured and ideal speed-up against compression: a column per model family, a row per
    runtime and thread count."""
    plt = _pyplot()
    fams = list(dep)
    rts = [rt for rt in ("host", "edge") if any(rt in lv["speed"] for f in dep.values()
                                                for lv in f["levels"])]
    panels = [(rt, t) for rt in rts
              for t in sorted({t for f in dep.values() for lv in f["levels"]
                               for t in lv["speed"].get(rt, {})}, key=int)]
    fig, axes = plt.subplots(len(panels), len(fams),
                             figsize=(4.6 * len(fams), 3.6 * len(panels)), squeeze=False)
    for j, fam in enumerate(fams):
        f = dep[fam]
        crs = [lv["compression"] for lv in f["levels"]]
        for i, (rt, t) in enumerate(panels):
            ax = axes[i][j]
            for k, (c, m, lab) in VARIANT_STYLES.items():
                ys = [lv["speed"].get(rt, {}).get(t, {}).get("speedup", {}).get(k)
                      for lv in f["levels"]]
                if any(y is not None for y in ys):
                    ax.plot(crs, [y if y is not None else float("nan") for y in ys], marker=m,
                            color=c, label=lab)
            ax.plot(crs, [lv["ideal_speedup_executed"]["pruned"] for lv in f["levels"]], "--",
                    color="C0", alpha=0.6, label="ideal (a): MAC ratio")
            ax.plot(crs, [lv["ideal_speedup_executed"]["tfmot_sparse"] for lv in f["levels"]],
                    ":", color="C1", alpha=0.6, label="ideal zero-skipping: non-zero MACs")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_title(f"{_family_title(fam, f)}: {rt}, {t} thread(s)", fontsize=9)
            ax.set_xlabel("compression ratio (dense / non-zero weights)")
            ax.set_ylabel("speedup vs dense")
            ax.grid(True, which="both", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Measured speedup vs compression (median of interleaved ratios)", fontsize=11)
    return _save(fig, path)


def plot_size(dep: dict, path: Path) -> Path:
    """fp32 file size of each variant against compression, a panel per model family."""
    plt = _pyplot()
    fams = list(dep)
    fig, axes = plt.subplots(1, len(fams), figsize=(4.6 * len(fams), 3.8), squeeze=False)
    for j, fam in enumerate(fams):
        f = dep[fam]
        ax = axes[0][j]
        crs = [lv["compression"] for lv in f["levels"]]
        for k, (c, m, lab) in VARIANT_STYLES.items():
            ax.plot(crs, [lv["variants"][k]["bytes"] / 1e6 for lv in f["levels"]], marker=m,
                    color=c, label=lab)
        ax.axhline(f["levels"][0]["variants"]["dense"]["bytes"] / 1e6, color="grey", lw=0.8,
                   label="(d) dense")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(_family_title(fam, f), fontsize=9)
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("fp32 TFLite file (MB)")
        ax.grid(True, which="both", alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pareto(points: list[dict], path: Path) -> Path:
    """Accuracy against latency and against file size of every Pareto point, by source."""
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "ms", "latency, ms (1 thread, interleaved median)"),
                            (axes[1], "kib", "file size, KiB")):
        groups: dict = {}
        for p in points:
            groups.setdefault(p["source"], []).append(p)
        base_srcs = [g for g in groups if g.startswith("baseline_e")]
        for src, pts in sorted(groups.items()):
            marker, color = next((v for k, v in SOURCE_STYLES.items() if src.startswith(k)),
                                 (".", "C7"))
            if src.startswith("baseline_e"):      # baselines of each epoch count apart
                order = sorted(base_srcs, key=lambda b: int(b[10:] or 0))
                color = ("C1", "C8", "C9", "C6")[min(order.index(src), 3)]
            pts = sorted(pts, key=lambda p: p["ms"])
            xs = [p["ms"] if key == "ms" else p["bytes"] / 1024 for p in pts]
            ax.plot(xs, [p["accuracy"] for p in pts], marker=marker, color=color, label=src,
                    linestyle="-" if src == "portfolio" else "none", alpha=0.85)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (TFLite fp32)")
        lo = min(p["accuracy"] for p in points)
        ax.set_ylim(max(lo - 0.01, 0.9 if lo > 0.9 else lo - 0.01), None)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Portfolio vs training a smaller model, tfmot, Reconvene, MCT (mnist5k)")
    return _save(fig, path)

"""Render the Pareto benchmark (OUT/raw/pareto.json): OUT/PARETO.md and OUT/plots/pareto.png.

    .venv/bin/python tools/pareto_report.py --out bench

A baseline is *covered* when a deployed variant is at most 0.5 point less accurate and at most
1.1x slower (1 thread, interleaved medians): the user gets at least the same from the portfolio.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shifter_tf.util.io import atomic_write_text  # noqa: E402

ACC_SLACK, LAT_SLACK = 0.005, 1.1


def covers(v: dict, b: dict) -> bool:
    return v["accuracy"] >= b["accuracy"] - ACC_SLACK and v["ms"] <= LAT_SLACK * b["ms"]


def coverage(deployed: list[dict], baseline: dict) -> dict | None:
    """The best deployed variant covering `baseline` (most accurate, then fastest), or None."""
    ok = [v for v in deployed if covers(v, baseline)]
    return max(ok, key=lambda v: (v["accuracy"], -v["ms"])) if ok else None


def front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both accuracy and latency."""
    return [p for p in points if not any(
        q["accuracy"] >= p["accuracy"] and q["ms"] <= p["ms"] and
        (q["accuracy"] > p["accuracy"] or q["ms"] < p["ms"]) for q in points)]


def _label(p: dict) -> str:
    return p["id"].replace("portfolio/", "")


def table(points: list[dict], dense_ms: float) -> list[str]:
    rows = ["| point | source | test acc | ms @1 thread | speed-up vs dense | KiB | params |",
            "|:--|:--|--:|--:|--:|--:|--:|"]
    for p in sorted(points, key=lambda p: (p["source"], p.get("level") or 0, -p["ms"])):
        rows.append(f"| {_label(p)} | {p['source']} | {p['accuracy']:.3f} | {p['ms']:.3f} | "
                    f"{p['speedup']:.2f}× | {p['bytes'] / 1024:.1f} | "
                    f"{(p.get('params') or 0):,} |")
    return rows


def plot(points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    styles = {"portfolio": ("o", "C0"), "baseline_e": ("s", "C1"), "tfmot": ("x", "C2"),
              "reconvene": ("^", "C3"), "mct": ("D", "C4"), "arm:": ("v", "C5")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "ms", "latency, ms (1 thread, interleaved median)"),
                            (axes[1], "kib", "file size, KiB")):
        groups: dict = {}
        for p in points:
            groups.setdefault(p["source"], []).append(p)
        base_srcs = [g for g in groups if g.startswith("baseline_e")]
        for src, pts in sorted(groups.items()):
            marker, color = next((v for k, v in styles.items() if src.startswith(k)),
                                 (".", "C7"))
            if src.startswith("baseline_e"):      # short and long baselines apart
                color = "C1" if src == min(base_srcs, key=lambda b: int(b[10:] or 0)) else "C8"
            pts = sorted(pts, key=lambda p: p["ms"])
            xs = [p["ms"] if key == "ms" else p["bytes"] / 1024 for p in pts]
            ax.plot(xs, [p["accuracy"] for p in pts], marker=marker, color=color, label=src,
                    linestyle="-" if src == "portfolio" else "none", alpha=0.85)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (TFLite fp32)")
        lo = min(p["accuracy"] for p in points)
        ax.set_ylim(max(lo - 0.01, 0.9 if lo > 0.9 else lo - 0.01), None)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Portfolio vs training a smaller model, tfmot, Reconvene, MCT (mnist5k)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(doc: dict, out: Path) -> str:
    pts = doc["points"]
    deployed = [p for p in pts if p["source"] == "portfolio"]
    dense = next(p for p in deployed if p["kind"] == "dense")
    lines = ["## Pareto: the portfolio against training a smaller model", "",
             f"All points fp32 TFLite, accuracy on the same {doc.get('test_size', '')} test "
             "images, latency at 1 thread timed interleaved in one process (median of rounds; "
             f"speed-up = median of round-by-round ratios to `{_label(dense)}`). Baselines use "
             f"the same recipe for {doc['level_epochs']} epochs (one IMP level) and "
             f"{doc['run_epochs']} epochs (the whole IMP run). Covered = a deployed variant at "
             f"most {ACC_SLACK * 100:.1f} point less accurate and at most {LAT_SLACK}× slower.",
             "", "![pareto](plots/pareto.png)", "", *table(pts, dense["ms"]), "",
             "### Coverage of each peer point", ""]
    peers = [p for p in pts if p["source"] != "portfolio"]
    n_cov = 0
    for b in sorted(peers, key=lambda p: (p["source"], p.get("level") or 0, -p["ms"])):
        v = coverage(deployed, b)
        n_cov += v is not None
        lines.append(f"- {_label(b)} ({b['accuracy']:.3f} at {b['ms']:.3f} ms): " + (
            f"**covered** by {_label(v)} ({v['accuracy']:.3f} at {v['ms']:.3f} ms)" if v else
            "**not covered**"))
    base = [b for b in peers if b["source"].startswith("baseline")]
    n_base = sum(coverage(deployed, b) is not None for b in base)
    fast = [v for v in deployed if v["kind"] == "pruned" and
            v["accuracy"] >= dense["accuracy"] - 0.01]
    best = max(fast, key=lambda v: v["speedup"], default=None)
    lines += ["", f"Width-scaled baselines covered: **{n_base} of {len(base)}**; all peer "
              f"points covered: {n_cov} of {len(peers)}.",
              (f"Fastest pruned variant within 1 point of dense: **{_label(best)}**, "
               f"{best['accuracy']:.3f} at **{best['speedup']:.2f}×** dense speed."
               if best else "No pruned variant within 1 point of dense."), ""]
    lines += behind(doc, deployed, peers)
    lines += ablation(doc, pts)
    lines += simd_lines(out)
    plot(pts, out / "plots" / "pareto.png")
    return "\n".join(lines) + "\n"


def behind(doc: dict, deployed: list[dict], peers: list[dict]) -> list[str]:
    """Honest limits of the comparison, with the peers the portfolio does not cover."""
    missed = [p for p in peers if coverage(deployed, p) is None]
    n = doc.get("test_size") or 0
    se = (0.98 * 0.02 / n) ** 0.5 if n else None
    lines = ["### Where we are behind", ""]
    lines += [f"- Not covered: {_label(p)} ({p['accuracy']:.3f} at {p['ms']:.3f} ms)."
              for p in missed] or ["- Every peer point above is covered by a deployed variant."]
    lines += [
        f"- One seed, {n} test images: one accuracy has a standard error of about "
        f"{se * 100:.1f} point at 98 %, the size of the 0.5-point slack; a rerun with another "
        "seed can move a point across the coverage line." if se else "- One seed.",
        "- Latencies are of a 73 k-parameter model (tens of µs): fixed per-op cost dominates "
        "the smallest variants, so speed-ups flatten below ~0.02 ms and widths stop mattering.",
        "- Learning-rate rewinding makes every level inherit the previous level's training, so "
        "a level has had more epochs than one level's baseline; the whole-run baselines get "
        "the whole run's epochs for that reason.",
        "- MCT and Reconvene are run with their documented defaults and our recipe, untuned; "
        "MCT's scoring dominates its wall time.", ""]
    return lines


def ablation(doc: dict, pts: list[dict]) -> list[str]:
    """The deployed run against each ablation arm, per level: test accuracy / whole filters that
    are zero / speed-up of the deployed pruned fp32 variant (or why it is not deployed)."""
    arms = doc.get("arms") or {}
    if not arms:
        return []
    runs = {"portfolio": doc.get("run_levels", []),
            **{f"arm:{k}": v["levels"] for k, v in arms.items()}}
    speed = {(p["source"], p.get("level")): p for p in pts if p["kind"] == "pruned"}
    lines = ["### Ablation: structure-inducing training against the paper's plain IMP", "",
             "Per level: test accuracy (Keras, full test split) / whole filters that are zero / "
             "speed-up vs dense of the deployed pruned fp32 variant (`floor` = more than "
             "`portfolio.max_accuracy_drop` below dense, not deployed). `portfolio` is what "
             "`make demo` deploys; each arm is the same config with: " +
             "; ".join(f"`{k}`: `{v['sets']}`" for k, v in arms.items()) + ".", "",
             "| level | density | " + " | ".join(s.replace("arm:", "") for s in runs) + " |",
             "|--:|--:|" + "|".join(":--" for _ in runs) + "|"]
    levels = sorted({r["level"] for rows in runs.values() for r in rows if r["level"] > 0})
    for lv in levels:
        cells, density = [], None
        for src, rows in runs.items():
            r = next((x for x in rows if x["level"] == lv), None)
            if r is None:
                cells.append("—")
                continue
            density = r["density"]
            p = speed.get((src, lv))
            sp = f"{p['speedup']:.2f}×" if p else "floor"
            cells.append(f"{r['test_accuracy']:.3f} / {r['zero_filters']} / {sp}")
        lines.append(f"| {lv} | {density:.3f} | " + " | ".join(cells) + " |")
    return lines + [""]


def simd_lines(out: Path) -> list[str]:
    """tools/bench_simd.py: pruned widths as-is vs rounded up to multiples of 4 and 8."""
    path = out / "raw" / "simd.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["rows"]
    lines = ["### Rounding kept channels up to SIMD multiples (tools/bench_simd.py)", "",
             "Same levels' alive widths, built as-is and rounded up (extra zero channels keep "
             "the model exact); fp32, 1 thread, interleaved.", "",
             "| level | multiple | widths | ms | vs exact |", "|:--|--:|:--|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['multiple']} | {r['widths']} | {r['ms']:.4f} | "
                     f"{r['vs_exact']:.2f}× |")
    slower = all(r["vs_exact"] >= 0.98 for r in rows)
    return lines + ["", "Rounding up " + ("never made a variant faster here, so the rewriter "
                                          "keeps exact channel counts." if slower else
                                          "made some variant faster: see the rows above."), ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench")
    args = ap.parse_args(argv)
    out = Path(args.out)
    doc = json.loads((out / "raw" / "pareto.json").read_text())
    text = render(doc, out)
    atomic_write_text(out / "PARETO.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

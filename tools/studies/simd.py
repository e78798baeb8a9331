"""Does rounding kept channel counts up to SIMD-friendly multiples buy XNNPACK latency?

    .venv/bin/python -m tools.studies.simd --run runs/demo --out bench     # or: make bench-simd

For a few levels of RUN, the pruned widths (alive filters per conv, from lottery.json) are built
as-is and rounded up to multiples of 4 and 8 (keeping a few zero channels would make such a model
exactly equal to the pruned one; only its shape matters for speed), converted to fp32 TFLite and
timed interleaved at 1 thread. Writes OUT/raw/simd.json, which PARETO.md shows from its next
render (`python -m tools.bench.report --out OUT --render-only`). VGG-style runs only (the zoo's
`build_vgg`): the widths are laid out as the config's conv stack.

An on-demand study, not part of `make bench`: on the embedded default, rounding up never made a
variant faster (1.01-1.88x slower), so the rewriter keeps exact channel counts.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from shifter_tf.util.io import atomic_write_json
from tools.bench.common import DEFAULT_RUN, ROOT, child_env, module_cmd

MULTIPLES = (1, 4, 8)


def layouts(run: Path, levels: list[int]) -> dict[str, list]:
    """VGG cfg lists (ints and "M") of the alive widths of `levels`, from the zoo's cfg."""
    from shifter_tf.config.schema import load_config
    from shifter_tf.models.vgg import CFGS
    cfg = load_config(run / "config.yaml")
    base = CFGS[cfg.model.name]
    rows = {r["level"]: r for r in json.loads((run / "lottery.json").read_text())}
    out = {}
    for lv in levels:
        r = rows[lv]
        alive = [f - z for n, f in r["filters"].items() for z in [r["zero_filters"][n]]
                 if n.startswith("block")]
        it = iter(alive)
        out[f"L{lv:02d}"] = [v if v == "M" else next(it) for v in base]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=DEFAULT_RUN)
    ap.add_argument("--out", default="bench")
    ap.add_argument("--levels", type=int, nargs="+", default=None)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    import shifter_tf  # noqa: F401
    from shifter_tf.config.schema import load_config
    from shifter_tf.export.convert import convert
    from shifter_tf.models.vgg import build_vgg

    cfg = load_config(run / "config.yaml")
    n = cfg.lottery.levels
    levels = args.levels or sorted({max(1, n // 3), max(1, 2 * n // 3), n})
    work = Path(tempfile.mkdtemp(prefix="simd_"))
    variants, widths = {}, {}
    shape = None
    for name, layout in layouts(run, levels).items():
        for m in MULTIPLES:
            ws = [v if v == "M" else int(math.ceil(v / m) * m) for v in layout]
            if shape is None:
                from shifter_tf.data.loaders import load_dataset
                shape = load_dataset(cfg.data, cfg.seed).input_shape
            model = build_vgg(ws, shape, 10)
            path = work / f"{name}_x{m}.tflite"
            path.write_bytes(convert(model, "fp32"))
            variants[f"{name}_x{m}"] = str(path)
            widths[f"{name}_x{m}"] = [v for v in ws if v != "M"]
    spec = {"threads": [1], "rounds": args.rounds, "min_rounds": 5, "block_ms": 4.0,
            "warmup": 3, "groups": [{"id": "simd", "reference": next(iter(variants)),
                                     "variants": variants}]}
    (work / "spec.json").write_text(json.dumps(spec))
    subprocess.run(module_cmd(sys.executable, "tools.bench.latency", work / "spec.json",
                              "--out", work / "lat.json"),
                   check=True, capture_output=True, cwd=ROOT, env=child_env())
    res = json.loads((work / "lat.json").read_text())["groups"][0]["by_threads"][0]
    rows = [{"id": k, "level": k.split("_")[0], "multiple": int(k.split("_x")[1]),
             "widths": widths[k], "ms": res["variants"][k]["median_ms"]} for k in variants]
    for r in rows:
        base = next(q for q in rows if q["level"] == r["level"] and q["multiple"] == 1)
        r["vs_exact"] = r["ms"] / base["ms"]
    atomic_write_json(out / "raw" / "simd.json", {"run": str(run), "rows": rows})
    for r in rows:
        print(f"{r['id']:10s} widths {r['widths']}  {r['ms']:.4f} ms  "
              f"{r['vs_exact']:.2f}x of exact")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

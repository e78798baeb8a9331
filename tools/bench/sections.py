"""The sections of bench/RESULTS.md (each `render_*` appends its lines through `a`), the headline
table's rows and the number formats; `tools.bench.report` puts them together.
"""
from __future__ import annotations

from tools.bench.common import VARIANTS, median
from tools.bench.numbers import PAPER, PAPER_RECIPE


def _x(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}x"


def _kb(b):
    if b is None:
        return "n/a"
    return f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} KB"


def _ms(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}"


def headline_rows(r: dict) -> list:
    rows = []
    h = {x["claim"]: x for x in r.get("headline", [])}
    size = h.get("size", {}).get("ours") or []
    parts = []
    for o in sorted(size, key=lambda o: o["synthetic"]):
        tag = " (synthetic: structure emulated, ratio set by alpha)" if o["synthetic"] \
            else " (trained)"
        parts.append(f"{o['family']}{tag}: **{o['vs_sparse']:.2f}x** vs (c) at {o['at']}; "
                     f"vs tfmot (b) {o['vs_tfmot_last']:.2f}x at the last level")
    rows.append(["pruned vs sparse size", PAPER["size"]["text"], "<br>".join(parts) or "n/a",
                 "fp32 TFLite file bytes, (c)/(a) and (b)/(a), best level; < 1x means ours is "
                 "larger"])
    sp = h.get("speed", {}).get("ours") or []
    parts = []
    for o in sorted(sp, key=lambda o: o["synthetic"]):
        if o["threads"] != "1":
            continue
        tag = "synthetic" if o["synthetic"] else "trained"
        parts.append(f"{o['family']} ({tag}, {o['runtime']}): **{o['best']:.2f}x** at {o['at']}")
    rows.append(["pruned vs sparse latency (CPU)", PAPER["speed"]["text"],
                 "<br>".join(parts) or "n/a",
                 "median of interleaved (b)/(a) latency ratios, 1 thread, best level; 2-thread "
                 "figures in section 1"])
    s = r.get("surgery") or {}
    parts = []
    for k, v in s.items():
        if k.endswith("_rewrite_ms"):
            parts.append(f"{k.split('_')[0]}: median **{v['median']:.0f} ms** "
                         f"(range {v['min']:.0f}-{v['max']:.0f})")
    rows.append(["structured pruning time", PAPER["prune_ms"]["text"], "<br>".join(parts) or "n/a",
                 "prune_structured's own timer (trace, BN fold, graph, analysis, rebuild; no "
                 "verification), tools.bench.surgery at 90-99.6% sparsity"])
    sw = r.get("switching") or {}
    if sw:
        rows.append(["switching overhead", f"{PAPER['switch']['text']}; "
                     f"{PAPER['decision_ms']['text']}",
                     f"decision **{sw['decide_ms']['p50'] * 1e3:.0f} µs** p50 "
                     f"(p99 {sw['decide_ms']['p99']:.1f} ms); decision+switch "
                     f"{sw['decide_switch_ms']['p50'] * 1e3:.0f} µs; reload-per-switch baseline "
                     f"{sw['reload_switch_ms']['p50']:.2f} ms = "
                     f"**{sw['overhead_ratio_vs_reload']:.1f}x** ours",
                     f"tools.bench.switcher, {sw['variants']} preloaded variants of the "
                     f"embedded portfolio, {sw['backend']}, {sw['threads']} thread"])
        rows.append(["switcher memory", f"{PAPER['memory']['text']}; {PAPER['memory_mb']['text']}",
                     f"**{sw['rss_mb']['switcher_one_variant']:.0f} MB** RSS with one variant, "
                     f"{sw['rss_mb']['switcher_all_preloaded']:.0f} MB with all "
                     f"{sw['variants']} preloaded (runtime alone "
                     f"{sw['rss_mb']['runtime_only']:.0f} MB); reload baseline peak "
                     f"{sw['rss_mb']['reload_per_switch_peak']:.0f} MB",
                     "whole-process RSS (VmRSS), median of child processes"])
    demo = r.get("demo") or {}
    if demo:
        wall = demo.get("wall_s")
        rows.append(["time to a portfolio", PAPER["portfolio"]["text"],
                     f"embedded default: {demo.get('train_s_total', 0) / 60:.1f} min training "
                     f"({len(demo.get('levels', []))} IMP levels, {demo.get('epochs_total')} "
                     "epochs)" + (f", {wall / 60:.1f} min end to end" if wall else ""),
                     "2 shared CPU cores, no GPU; section 4"])
    return rows


def render_family(a, fam: str, f: dict) -> None:
    a(f"### {f['title']}\n")
    if f["kind"] == "synthetic":
        a(f"**{f['label']}** — no trained CIFAR model is available on this machine (no data "
          "set, no GPU), so accuracy is not reported. Sparsity: " + (f.get("rule") or "") +
          f" (seed {f.get('seed')}). The `zero filters` column counts whole conv filters that "
          "are zero; `by magnitude alone` is what global magnitude pruning of these untrained "
          "weights leaves by itself. The structural fraction, and with it every size ratio of "
          "(a), follows from the emulation's alpha, not from training.\n")
    else:
        a(f"**{f['label']}**. Accuracy: top-1 of each TFLite file on the "
          f"{f.get('test_samples')} held-out test images. (a), (c), (d) are the portfolio's own "
          "files (sha256-checked); (a+) and (b) are converted here with "
          "shifter_tf.export.convert.convert.\n")
    trained = f["kind"] == "trained"
    a("Size (fp32 TFLite bytes; gzip in brackets):\n")
    hdr = ["CR", "density", "zero filters" + ("" if trained else " (by magnitude alone)"),
           "MACs (a)", "(d) dense", "(a) ours", "(a+) ours+sparse", "(b) tfmot", "(c) sparse",
           "(c)/(a)", "(b)/(a)"]
    if trained:
        hdr += ["acc (d)", "acc (a)", "acc (b)", "acc (c)"]
    a("| " + " | ".join(hdr) + " |")
    a("|" + "---:|" * len(hdr))
    for lv in f["levels"]:
        v = lv["variants"]
        zf = f"{lv['zero_filters']}/{lv['filters']}"
        if not trained and lv.get("natural_zero_filters") is not None:
            zf += f" ({lv['natural_zero_filters']})"
        cells = [f"{lv['compression']:.1f}x" if trained else f"{lv['compression']}x",
                 f"{lv['density']:.4f}", zf, f"{v['pruned']['macs'] / 1e6:.1f} M"]
        for k in VARIANTS:
            cells.append(f"{_kb(v[k]['bytes'])} [{_kb(v[k]['gzip_bytes'])}]")
        cells.append(_x(v["sparse"]["bytes"] / v["pruned"]["bytes"]))
        cells.append(_x(v["tfmot_sparse"]["bytes"] / v["pruned"]["bytes"]))
        if trained:
            for k in ("dense", "pruned", "tfmot_sparse", "sparse"):
                acc = v[k].get("accuracy")
                cells.append("n/a" if acc is None else f"{acc:.3f}")
        a("| " + " | ".join(cells) + " |")
    a("")
    for rt in ("host", "edge"):
        if not any(rt in lv["speed"] for lv in f["levels"]):
            continue
        a(f"Latency, `{rt}` runtime (dense ms; speedup vs dense [efficiency]; a vs b):\n")
        hdr = ["CR", "ideal (a)", "ideal (b)"]
        ths = sorted({t for lv in f["levels"] for t in lv["speed"].get(rt, {})}, key=int)
        for t in ths:
            hdr += [f"dense ms @{t}", f"(a) @{t}", f"(a+) @{t}", f"(b) @{t}", f"(c) @{t}",
                    f"a vs b @{t}"]
        a("| " + " | ".join(hdr) + " |")
        a("|" + "---:|" * len(hdr))
        for lv in f["levels"]:
            cr = f"{lv['compression']:.1f}x" if trained else f"{lv['compression']}x"
            cells = [cr, _x(lv["ideal_speedup_executed"]["pruned"]),
                     _x(lv["ideal_speedup_executed"]["tfmot_sparse"])]
            for t in ths:
                s = lv["speed"].get(rt, {}).get(t)
                if not s:
                    cells += ["n/a"] * 6
                    continue
                cells.append(_ms(s["latency_ms"]["dense"]))
                for k in ("pruned", "pruned_sparse", "tfmot_sparse", "sparse"):
                    ideal = lv["ideal_speedup_executed"][k]
                    sp = s["speedup"].get(k)
                    eff = f" [{sp / ideal:.0%}]" if sp and ideal and k in ("pruned",
                                                                           "tfmot_sparse") else ""

                    cells.append(f"{_x(sp)}{eff}")
                cells.append(f"**{_x(s['pairs'].get('tfmot_sparse/pruned'))}**")
            a("| " + " | ".join(cells) + " |")
        rounds = sorted({s["rounds"] for lv in f["levels"]
                         for s in lv["speed"].get(rt, {}).values()})
        a(f"\nRounds per measurement: {rounds}; each round times a block of invocations and keeps "
          "its median.\n")


def render_memory(a, mem: dict) -> None:
    a("### Memory of one loaded variant\n")
    a("Resident memory a fresh process gains by loading the file as the edge runtime does "
      "(bytes read, interpreter allocated) and invoking it once (XNNPACK packs weights, DENSIFY "
      "expands sparse ones). One process per file.\n")
    for rt, m in mem.items():
        a(f"`{rt}` runtime, MB gained (file size in brackets):\n")
        a("| checkpoint | (d) dense | (a) ours | (a+) ours+sparse | (b) tfmot | (c) sparse |")
        a("|:---|---:|---:|---:|---:|---:|")
        rows: dict = {}
        dense: dict = {}
        for key, v in m.items():
            parts = key.split("/")
            cell = (f"error: {v['error'][:60]}" if "error" in v else
                    f"{v['delta_mb']:.1f} [{_kb(v['bytes'])}]")
            if len(parts) == 2:
                dense[parts[0]] = cell
            else:
                rows.setdefault("/".join(parts[:-1]), {})[parts[-1]] = cell
        for row, cells in rows.items():
            cells.setdefault("dense", dense.get(row.split("/")[0], ""))
            a(f"| {row} | " + " | ".join(cells.get(k, "") for k in VARIANTS) + " |")
        a("")
        a("Sparse encoding (a+, b) shrinks the file, not the memory: TFLite densifies those "
          "weights when the interpreter is prepared, and keeps the encoded copy too.\n")


def render_switching(a, sw: dict) -> None:
    a("## 2. Switching (tools.bench.switcher)\n")
    a(f"Portfolio `{sw['portfolio']}` ({sw['variants']} variants), {sw['backend']}, "
      f"{sw['threads']} thread, median of {sw['repeats']} child processes.\n")
    a("| strategy | decision p50 / p99 | switch p50 | resident memory |")
    a("|:---|---:|---:|---:|")
    rss = sw["rss_mb"]
    a(f"| ours: EdgeSwitcher, all variants preloaded | {sw['decide_ms']['p50'] * 1e3:.0f} µs / "
      f"{sw['decide_ms']['p99'] * 1e3:.0f} µs | {sw['switch_ms']['p50'] * 1e3:.1f} µs (decision+"
      f"switch {sw['decide_switch_ms']['p50'] * 1e3:.0f} µs) | "
      f"{rss['switcher_all_preloaded']:.1f} MB |")
    a(f"| ours: EdgeSwitcher, one variant held | — | needs a reload | "
      f"{rss['switcher_one_variant']:.1f} MB |")
    a(f"| baseline: reload from disk per switch | — | {sw['reload_switch_ms']['p50']:.2f} ms "
      f"(p99 {sw['reload_switch_ms']['p99']:.1f} ms) | {rss['reload_per_switch']:.1f} MB "
      f"(peak {rss['reload_per_switch_peak']:.1f}) |")
    a(f"| baseline: runtime imported, no model | — | — | {rss['runtime_only']:.1f} MB |")
    a(f"| paper: DNNShifter | {PAPER['decision_ms']['value']:.0f} ms | — | "
      f"{PAPER['memory_mb']['value']:.0f} MB |")
    a("")
    a(f"Switching overhead vs the reload baseline: **{sw['overhead_ratio_vs_reload']:.1f}x** "
      f"lower (paper: up to 11.9x vs its baselines). Our decision p50 is "
      f"{sw['decision_ratio_vs_paper']:.0f}x below the paper's 43 ms. Memory: preloading all "
      f"variants costs {sw['memory_ratio_ensemble_vs_one']:.2f}x the one-variant RSS "
      f"({sw['memory_above_runtime_mb']['switcher_all_preloaded']:.1f} MB above the bare "
      "runtime); the portfolio here is the small embedded default, so these absolute numbers "
      "are mostly the runtime itself.\n")
    st = sw.get("startup")
    if st:
        a(f"Start-up with {st['variants']} variants ({st['portfolio']} portfolio), all "
          "preloaded, before/after the isolated file check: unprotected "
          f"**{st['unprotected_ms']:.0f} ms**; first start, every file checked in a child "
          f"process **{st['first_start_ms']:.0f} ms** ({st['probe_ms_per_variant_first']:.1f} "
          f"ms per variant); later starts, verdicts cached by sha256 "
          f"**{st['cached_start_ms']:.0f} ms** (check {st['probe_ms_cached']:.1f} ms).\n")


def render_surgery(a, s: dict) -> None:
    a("## 3. Structured pruning time (tools.bench.surgery)\n")
    rows = s.get("rows") or []
    if rows:
        a("| model | sparsity | filters zeroed by | dead filters (magnitude) | rewrite ms (median) "
          "| at the baseline commit | params before -> after | MACs before -> after "
          "| max abs dlogit |")
        a("|:---|---:|:---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            old = r.get("rewrite_ms_median_before")
            a(f"| {r['model']} | {r['sparsity']:.3f} | {r['filters']} | "
              f"{r['dead_filters_from_magnitude']:.1%} | {r['rewrite_ms_median']:.0f} | "
              f"{'n/a' if old is None else f'{old:.0f}'} | "
              f"{r['params_before']:,} -> {r['params_after']:,} | "
              f"{r['macs_before'] / 1e6:.0f}M -> {r['macs_after'] / 1e6:.0f}M | "
              f"{r['max_abs_dlogit']:.1e} |")
        m = s.get("meta") or {}
        a(f"\n{m.get('runs', '?')} timed runs each; load average before/after "
          f"{m.get('loadavg_1_5_15_before')} / {m.get('loadavg_1_5_15_after')}. Paper: < 200 ms "
          "on VGG-16 (PyTorch).\n")
        for model in ("vgg16", "resnet50"):
            now, old = s.get(f"{model}_rewrite_ms"), s.get(f"{model}_rewrite_ms_before")
            if now and old:
                a(f"- {model}: median over rows {now['median']:.0f} ms (range {now['min']:.0f}-"
                  f"{now['max']:.0f}); at the baseline commit, same run: {old['median']:.0f} ms "
                  f"({old['min']:.0f}-{old['max']:.0f}).")
        ex = s.get("export")
        if ex:
            a(f"- export of a demo-shaped portfolio ({ex['variants']} variants, convert + "
              f"measure): serial {ex['serial_s']:.1f} s, parallel ({ex['workers']} worker "
              f"process(es) + the main one, {ex['cpus']} cores) {ex['parallel_s']:.1f} s; files "
              f"byte-identical: {ex['byte_identical']}.")
        a("")
    own = s.get("deploy_rewrites") or {}
    if own:
        a("Rewrite times of the checkpoints of section 1 (one run each, verification excluded; "
          "measured while the other model builder ran in parallel, so an upper bound, not the "
          "timing of record): " + "; ".join(f"{k}: median {v['median']:.0f} ms, range "
                                   f"{v['min']:.0f}-{v['max']:.0f} ms over {v['n']} levels"
                                   for k, v in own.items()) + ".\n")


def render_demo(a, demo: dict, r: dict) -> None:
    a("## 4. Time to a portfolio (embedded default)\n")
    cfg = demo.get("config") or {}
    a(f"`{demo.get('run')}`: {demo.get('note')}. Config `{cfg.get('name', '?')}`: model "
      f"{(cfg.get('model') or {}).get('name')}, {(cfg.get('train') or {}).get('epochs')} epochs "
      f"per level, {(cfg.get('lottery') or {}).get('levels')} IMP levels of "
      f"{(cfg.get('lottery') or {}).get('prune_fraction')}, 2 shared CPU cores.\n")
    a("| phase | wall time |")
    a("|:---|---:|")
    for lv in demo.get("levels", []):
        a(f"| train level {lv['level']} (density {lv['density']:.4f}, test acc "
          f"{lv['test_accuracy']:.3f}) | {lv['train_s']:.1f} s |")
    a(f"| **train total** | **{demo.get('train_s_total', 0):.0f} s** |")
    ph = demo.get("phase_s") or {}
    rw = demo.get("rewrite_ms") or {}
    if ph:
        a(f"| train phase (incl. data, checkpoints) | {ph.get('train_s', 0):.0f} s |")
        a(f"| prune phase (load, rewrite, verify, save; {len(rw)} levels) | "
          f"{ph.get('prune_s', 0):.1f} s |")
        a(f"| export phase (convert + measure every variant and precision) | "
          f"{ph.get('export_s', 0):.0f} s |")
    if rw:
        a(f"| of which rewrites (prune_structured timer) | "
          f"{sum(rw.values()):.0f} ms (median {median(rw.values()):.0f} ms/level) |")
    if demo.get("wall_s"):
        a(f"| end to end (`shifter-tf run`, this bench run) | {demo['wall_s'] / 60:.1f} min |")
    a("")
    if demo.get("phase_note"):
        a(f"Note: {demo['phase_note']}.\n")
    pr = r.get("paper_recipe") or PAPER_RECIPE
    a("Context: the paper reports producing pruned variants up to "
      f"{PAPER['portfolio']['value']:.0f}x faster than conventional training methods (its "
      "table compares GPU-days of prior methods; those values are not transcribed into this "
      f"repository, so they are not repeated here). The paper's own recipe for {pr['model']} is "
      f"{pr['trainings']} trainings x {pr['epochs_per_level']} epochs = {pr['epochs_total']:,} "
      "epochs on a GPU (configs/cifar10_vgg16.yaml); the embedded default is "
      f"{demo.get('epochs_total')} epochs of a 6-conv VGG on 4,000 MNIST images on 2 CPU cores, "
      "sized to finish within `make bench`.\n")

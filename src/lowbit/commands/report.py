"""`lowbit report --json results.json -o chart.png`: Pareto chart of decode speed vs bits per weight, with KLD
(from `lowbit perplexity --kld-ref ... --json results.json`) as marker color and size. Needs matplotlib
(`pip install lowbit[plot]`)."""
import json
from pathlib import Path


def add_arguments(p):
    p.add_argument("--json", required=True, nargs="+", help="result file(s) from `lowbit bench/perplexity --json`")
    p.add_argument("-o", "--output", required=True, help="PNG path")
    p.add_argument("--test", default="tg", help="which test to plot: tg (decode) or pp (prefill); default tg")
    p.add_argument("--threads", type=int, help="thread count to plot (default: the largest measured)")


def collect(paths, test="tg", threads=None):
    """Points (label, engine, format, bpw, tokens/s, kld or None) from bench and perplexity JSON files."""
    rows, ppl = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for run in data.get("runs", []):
            rows += run["rows"]
        ppl += data.get("perplexity", [])
    rows = [r for r in rows if r["test"].startswith(test)]
    if not rows:
        raise ValueError(f"no {test} rows in {', '.join(map(str, paths))} (run `lowbit bench ... --json`)")
    t = threads or max(r["threads"] for r in rows)
    # KLD by format; it may come from another (real) model than the speed rows (synthetic weights have no quality)
    kld = {p["format"]: p["kld"]["kld_mean"] for p in ppl if p.get("kld")}
    kld_src = sorted({p.get("model", "?") for p in ppl if p.get("kld")})
    points = []
    for r in rows:
        if r["threads"] != t:
            continue
        points.append({"label": f"{r['engine']} {r['format']}", "model": r["model"], "engine": r["engine"],
                       "format": r["format"], "bpw": r["bpw"], "tps": r["median"],
                       "kld": kld.get(r["format"]) if r["engine"] == "lowbit" else None, "test": r["test"],
                       "threads": t, "kld_source": ", ".join(kld_src)})
    return points


def pareto(points):
    """Points not beaten on both speed (higher) and bits (lower)."""
    return [p for p in points if not any(q["tps"] >= p["tps"] and q["bpw"] <= p["bpw"] and q is not p and
                                         (q["tps"] > p["tps"] or q["bpw"] < p["bpw"]) for q in points)]


def main(args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("lowbit report needs matplotlib: pip install 'lowbit[plot]'") from None
    pts = collect(args.json, args.test, args.threads)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    klds = [p["kld"] for p in pts if p["kld"] is not None]
    vmax = max(klds) if klds else 1.0
    for p in pts:
        marker = "o" if p["engine"] == "lowbit" else "s"
        if p["kld"] is not None:
            sc = ax.scatter(p["bpw"], p["tps"], c=[p["kld"]], cmap="viridis_r", vmin=0, vmax=vmax, marker=marker,
                            s=60 + 2000 * p["kld"] / vmax if vmax else 60, edgecolors="k")
        else:
            ax.scatter(p["bpw"], p["tps"], marker=marker, s=60, facecolors="none", edgecolors="gray")
        ax.annotate(f"{p['label']}", (p["bpw"], p["tps"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = sorted(pareto(pts), key=lambda p: p["bpw"])
    ax.plot([p["bpw"] for p in front], [p["tps"] for p in front], "k--", lw=0.8, label="Pareto front")
    if klds:
        fig.colorbar(sc, ax=ax, label="KLD vs reference (lower is better)")
    models = sorted({p["model"] for p in pts})
    ax.set_xlabel("bits per weight (streamed matrices)")
    ax.set_ylabel(f"{pts[0]['test']} tokens/s ({pts[0]['threads']} threads)")
    title = f"{', '.join(models)}: speed vs size (circle = lowbit, square = llama.cpp)"
    if klds:
        title += f"\nKLD (color/size) measured on {pts[0]['kld_source']}"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output} ({len(pts)} points, Pareto front: {', '.join(p['label'] for p in front)})")
    return 0

"""`lowbit quantize MODEL --format cb4 [--codebooks C] [--calib FILE] -o OUT`: re-quantize a GGUF's 2-D block
weights (every blk.* matrix whose K is a multiple of 32) and write a GGUF. cb4/cb2 tensors are stored as
described in lowbit/quantize/gguf_io.py; q4_0/iq4_nl/q8_0 as ggml's own types. token_embd / output and all
1-D tensors are copied unchanged (`--all` quantizes output.weight too). `--format cb2 --keep-cb4 PATTERNS` makes
a cb2/cb4 mixture (cb4 on the matching, sensitive tensors), as llama.cpp's Q2_K mixes in Q3_K..Q6_K."""
import fnmatch
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..formats.cb import DEFAULT_CODEBOOKS

FORMATS = ("cb4", "cb2", "q4_0", "iq4_nl", "q8_0")


def add_arguments(p):
    p.add_argument("model", help="input GGUF (path or known model name)")
    p.add_argument("-o", "--output", required=True, help="output GGUF path")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--format", default="cb4", choices=FORMATS, help="target weight format (default cb4)")
    p.add_argument("--codebooks", type=int, default=None, help="codebooks per tensor, 1..16 (default 16)")
    p.add_argument("--calib", help="calibration text file for importance weights (not the evaluation text)")
    p.add_argument("--calib-tokens", type=int, default=4096, help="tokens of calibration text to run (4096)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--all", action="store_true", help="also quantize output.weight")
    p.add_argument("--sample", type=int, default=4096, help="groups per tensor used to learn the tables (4096)")
    p.add_argument("--rounds", type=int, default=16, help="alternating refinement rounds (16)")
    p.add_argument("--restarts", type=int, default=None,
                   help="k-means seedings learned per tensor, the one with the lowest sample error kept (default 1; "
                        "4 lowers cb4's weight MSE ~5%% but not its KLD, docs/codebooks.md)")
    p.add_argument("--keep-cb4", metavar="PATTERNS",
                   help="with --format cb2: tensors whose name matches one of these comma-separated shell patterns "
                        "(e.g. '*.ffn_down.*,blk.0.*') are quantized to cb4 instead")
    p.add_argument("--cb4-codebooks", type=int, default=DEFAULT_CODEBOOKS["cb4"],
                   help="codebooks of the --keep-cb4 tensors (default 16)")
    p.add_argument("--narrow-tables", action="store_true",
                   help="learn narrower tables (cb4 [-64, 64], cb2 [-16, 16]) that the AVX2 kernels run faster "
                        "(cb4 +10-20%%, cb2 +15-30%%) at a quality cost (docs/codebooks.md \"Narrow tables\")")


def keep_cb4_patterns(spec):
    """'a,b' -> ['a', 'b']; empty entries are an error (a stray comma would match nothing silently)."""
    pats = [p.strip() for p in spec.split(",")]
    if not all(pats):
        raise ValueError(f"--keep-cb4 {spec!r}: empty pattern")
    return pats


def _targets(reader, include_output):
    import gguf
    out = []
    for t in reader.tensors:
        shape = [int(s) for s in reversed(t.shape)]      # GGUF stores dims fastest-first
        if len(shape) != 2 or shape[1] % 32:
            continue
        if t.name.startswith("blk.") or (include_output and t.name == "output.weight"):
            if t.tensor_type in (gguf.GGMLQuantizationType.I8, gguf.GGMLQuantizationType.I32):
                continue
            out.append((t, tuple(shape)))
    return out


def main(args):
    from tqdm import tqdm

    from ..io.atomic import atomic_path
    from ..io.gguf import open_reader
    from ..quantize import gguf_io
    from ..registry import resolve

    fmt = args.format
    C = args.codebooks if args.codebooks is not None else DEFAULT_CODEBOOKS.get(fmt, 0)
    if fmt in DEFAULT_CODEBOOKS and not 1 <= C <= 16:
        raise ValueError(f"--codebooks must be in 1..16, got {C}")
    if fmt not in DEFAULT_CODEBOOKS and args.codebooks is not None:
        raise ValueError(f"--codebooks applies to cb4/cb2, not {fmt}")
    if args.calib and fmt not in DEFAULT_CODEBOOKS:
        raise ValueError("--calib (importance weights) applies to cb4/cb2 only")
    keep = keep_cb4_patterns(args.keep_cb4) if args.keep_cb4 else []
    if keep and fmt != "cb2":
        raise ValueError("--keep-cb4 applies to --format cb2 only")
    if args.restarts is not None and (fmt not in DEFAULT_CODEBOOKS or args.restarts < 1):
        raise ValueError(f"--restarts applies to cb4/cb2 and must be >= 1, got {args.restarts}")
    if args.narrow_tables and fmt not in DEFAULT_CODEBOOKS:
        raise ValueError(f"--narrow-tables applies to cb4/cb2, not {fmt}")
    if keep and not 1 <= args.cb4_codebooks <= 16:
        raise ValueError(f"--cb4-codebooks must be in 1..16, got {args.cb4_codebooks}")
    src_path = resolve(args.model)
    if src_path.is_dir():
        raise ValueError(f"{src_path}: lowbit quantize reads GGUF files (convert the directory first)")
    out_path = os.path.abspath(args.output)
    if out_path == os.path.abspath(src_path):
        raise ValueError("output would overwrite the input model")
    if os.path.exists(out_path) and not args.force:   # checked before the work (atomic_path checks again)
        raise FileExistsError(f"{out_path} exists; pass --force to overwrite it")
    threads = args.threads or os.cpu_count() or 1
    if threads < 1:
        raise ValueError("--threads must be >= 1")

    t_start = time.perf_counter()
    importance = {}
    if args.calib:
        with open(args.calib, encoding="utf-8") as f:
            text = f.read()
        from ..quantize.calib import collect_importance
        with tqdm(total=args.calib_tokens, unit="tok", desc="calibration", file=sys.stderr) as bar:
            importance = collect_importance(src_path, text, args.calib_tokens, progress=bar.update)
        print(f"calibration: {args.calib} ({time.perf_counter() - t_start:.1f} s)", file=sys.stderr)

    reader = open_reader(src_path)
    if gguf_io.is_codebook_gguf(reader):
        raise ValueError(f"{src_path} already holds codebook tensors; quantize the original model")
    arch = reader.fields["general.architecture"].contents()
    targets = dict((t.name, shape) for t, shape in _targets(reader, args.all))
    total = sum(N * K for N, K in targets.values())
    as_cb4 = {n for n in targets if any(fnmatch.fnmatchcase(n, p) for p in keep)}
    if keep and not as_cb4:
        raise ValueError(f"--keep-cb4 {args.keep_cb4!r} matches none of the {len(targets)} quantized tensors")
    # written beside OUT and renamed when complete: an interrupted or failed run leaves no partial file, and an
    # existing OUT is only replaced with --force
    with atomic_path(out_path, args.force) as tmp:
        bits, t_q, t_done = _write(reader, tmp, arch, fmt, C, targets, as_cb4, importance, args, threads)
    print(f"quantized {len(targets)} tensors, {total / 1e6:.1f} M weights to {fmt}"
          + (f" (C={C}{', importance-weighted' if importance else ''})" if fmt in DEFAULT_CODEBOOKS else "")
          + (f", {len(as_cb4)} of them cb4 (C={args.cb4_codebooks}, --keep-cb4)" if as_cb4 else "")
          + f": {bits / max(total, 1):.4f} bits/weight incl. scales, ids and tables")
    print(f"quantization time: {t_done - t_q:.1f} s ({threads} threads); total {time.perf_counter() - t_start:.1f} s; "
          f"wrote {out_path} ({os.path.getsize(out_path) / 2**20:.1f} MiB)")
    return 0


def _write(reader, path, arch, fmt, C, targets, as_cb4, importance, args, threads):
    """Quantize the target tensors of `reader` and write the GGUF to path; returns (bits, t_start, t_end)."""
    import gguf
    from tqdm import tqdm

    from ..formats import get_format
    from ..formats.cb import NARROW_RANGE
    from ..io.source import dequantize
    from ..quantize import gguf_io, quantize_tensor
    total = sum(N * K for N, K in targets.values())
    writer = gguf.GGUFWriter(path, arch)
    gguf_io.copy_fields(reader, writer)
    if fmt in DEFAULT_CODEBOOKS:
        writer.add_uint32("lowbit.cb.version", gguf_io.VERSION)
    writer.add_string("lowbit.quantized_format", fmt)

    t_q = time.perf_counter()
    bits = 0
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            tqdm(total=total, unit="w", unit_scale=True, desc=f"quantize {fmt}", file=sys.stderr) as bar:
        for t in reader.tensors:
            if t.name not in targets:
                gguf_io.add_copied_tensor(writer, t)
                continue
            N, K = targets[t.name]
            w = dequantize(np.asarray(t.data), t.tensor_type.name, (N, K))
            if fmt in DEFAULT_CODEBOOKS:
                f_t, C_t = ("cb4", args.cb4_codebooks) if t.name in as_cb4 else (fmt, C)
                rng_t = NARROW_RANGE.get(f_t) if args.narrow_tables else None
                ct = quantize_tensor(w, f_t, C_t, importance=importance.get(t.name), rounds=args.rounds,
                                     sample=args.sample, pool=pool, progress=lambda g: bar.update(32 * g),
                                     table_range=rng_t, threads=threads, restarts=args.restarts)
                gguf_io.add_codebook_tensor(writer, t.name, ct)
                bits += (ct.blocks.nbytes + ct.tables.nbytes) * 8
            else:
                f = get_format(fmt)
                blocks = f.quantize(w.reshape(-1, 32)).reshape(N, -1)
                writer.add_tensor(t.name, blocks, raw_dtype=gguf.GGMLQuantizationType[fmt.upper()])
                bits += blocks.nbytes * 8
                bar.update(N * K)
    t_done = time.perf_counter()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return bits, t_q, t_done

#!/usr/bin/env python3
"""Instruction mix of each Arm micro-kernel's hot loop, from `aarch64-linux-gnu-objdump -d`.

Compiles every aarch64 ISA directory of setup.py (ISA_DIRS, BASE_FLAGS: the same flags the extension uses)
with the cross gcc, disassembles the objects and, per exported gemv_/gemm_ function, finds the innermost
loop (a backward branch) that holds the multiply instructions: the per-K-block loop. Prints a markdown table
of its length and the share of SDOT / SMMLA / TBL (and the plain-NEON widening multiplies) in it.

    python scripts/instruction_mix.py [--cc aarch64-linux-gnu-gcc] [--objdump aarch64-linux-gnu-objdump]
"""
import argparse
import ast
import glob
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# mnemonic groups counted in the loop; "mul" = every integer multiply-accumulate form of any path
GROUPS = {
    "sdot": ("sdot",),
    "smmla": ("smmla",),
    "tbl": ("tbl",),
    "widen": ("smull", "smull2", "smlal", "smlal2", "sadalp"),
}
MUL = {"sdot", "smmla", "smull", "smull2", "smlal", "smlal2"}


def setup_constants():
    """ISA_DIRS and BASE_FLAGS from setup.py, read without running it."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("ISA_DIRS", "BASE_FLAGS"):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out["ISA_DIRS"], out["BASE_FLAGS"]


def build(cc, tmp):
    isa_dirs, base = setup_constants()
    objs = []
    for d, (arches, flags) in isa_dirs.items():
        if "aarch64" not in arches:
            continue
        for src in sorted(glob.glob(os.path.join(REPO, d, "*.c"))):
            obj = os.path.join(tmp, os.path.basename(src)[:-2] + ".o")
            subprocess.run([cc, *base, "-fPIC", *flags, "-DLB_HAVE_SVE=1", "-I", os.path.join(REPO, "csrc/include"),
                            "-I", os.path.join(REPO, "csrc"), "-c", src, "-o", obj], check=True)
            objs.append(obj)
    return objs


LINE = re.compile(r"^\s*([0-9a-f]+):\s+[0-9a-f]{8}\s+(\S+)\s*(.*)$")
FUNC = re.compile(r"^[0-9a-f]+ <(\w+)>:$")
BRANCH = re.compile(r"^(b(\.\w+)?|cbn?z|tbn?z)$")


def functions(objdump, obj):
    text = subprocess.run([objdump, "-d", obj], check=True,
                          capture_output=True, text=True).stdout
    funcs, cur = {}, None
    for ln in text.splitlines():
        m = FUNC.match(ln.strip())
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = LINE.match(ln)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return funcs


def hot_loop(insns):
    """The shortest loop [target, backward branch] that contains a multiply instruction."""
    best = None
    for i, (addr, mn, ops) in enumerate(insns):
        if not BRANCH.match(mn):
            continue
        t = re.search(r"\b([0-9a-f]+) <", ops)
        if not t:
            continue
        target = int(t.group(1), 16)
        if target > addr:
            continue
        body = [x for x in insns if target <= x[0] <= addr]
        if any(x[1] in MUL for x in body) and (best is None or len(body) < len(best)):
            best = body
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cc", default="aarch64-linux-gnu-gcc")
    ap.add_argument("--objdump", default="aarch64-linux-gnu-objdump")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for obj in build(args.cc, tmp):
            for name, insns in sorted(functions(args.objdump, obj).items()):
                if not name.startswith(("gemv_", "gemm_")):
                    continue
                loop = hot_loop(insns)
                if loop is None:
                    print(f"{name}: no loop with multiplies found", file=sys.stderr)
                    continue
                counts = {g: sum(x[1] in mns for x in loop) for g, mns in GROUPS.items()}
                rows.append((name, len(insns), len(loop), counts))
    print("| kernel | fn insns | hot-loop insns | SDOT | SMMLA | TBL | SMULL/SMLAL/SADALP | "
          "SDOT+SMMLA share | +TBL share | MACs / loop insn |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n_fn, n, c in rows:
        dot = c["sdot"] + c["smmla"]
        # one loop trip = one K-block (32 values) of R weight rows x (1 or 4) activation rows
        R = int(re.search(r"_(\d)x\d__", name).group(1))
        macs = 32 * R * (4 if name.startswith("gemm_") else 1)
        print(f"| {name} | {n_fn} | {n} | {c['sdot']} | {c['smmla']} | {c['tbl']} | {c['widen']} | "
              f"{100 * dot / n:.1f}% | {100 * (dot + c['tbl']) / n:.1f}% | {macs / n:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""llama.cpp's own quantizer (llama_model_quantize, llama-cpp-python = the `peer` extra) on an F32/F16 GGUF, with
the token embedding kept in the input's float type (--keep-embd) so every quality-table row shares the same
embedding/output. Run with the peer venv's python (scripts/peer_venv.sh):
  /work/cache/peer-venv/bin/python scripts/codebooks/llama_quantize.py IN.gguf OUT.gguf Q4_K_M [--keep-embd]"""
import argparse
import ctypes

import llama_cpp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("ftype", help="llama.cpp file type, e.g. Q4_K_M, Q2_K")
    p.add_argument("--keep-embd", action="store_true", help="token_embd.weight stays F32 (no Q6_K/Q2_K for it)")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{a.ftype.upper()}")
    params.nthread = a.threads
    if a.keep_embd:
        params.token_embedding_type = 0      # GGML_TYPE_F32
    rc = llama_cpp.llama_model_quantize(a.src.encode(), a.dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")


if __name__ == "__main__":
    main()

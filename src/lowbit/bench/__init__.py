"""Benchmarks: micro-kernels (kernels.py), end-to-end pp/tg (e2e.py), machine ceilings (roofline.py), llama.cpp peer (peer.py)."""

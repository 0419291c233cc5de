"""Loading must not keep what it only needed on the way: the GGUF reader and its metadata, the mapped source pages,
re-quantization scratch. RSS bounds are generous (they catch a kept mapping or a kept float copy, not noise) and
measured in a fresh interpreter, where nothing else has touched the heap."""
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.io import gguf as lowbit_gguf

STORIES = Path(__file__).resolve().parents[1] / "src" / "lowbit" / "data" / "stories260K.gguf"
MiB = 2 ** 20
# RSS added by building the weights (after the tokenizer) <= MODEL_FACTOR x weight bytes + MODEL_SLACK: activation
# buffers, the rope table and code pages of numpy paths first used. Measured 16.3 MiB for 12.5 MiB of weights.
MODEL_FACTOR, MODEL_SLACK = 1.15, 6 * MiB
TOKENIZER_SLACK = 14 * MiB      # an 8k-token SentencePiece tokenizer + its libraries' pages (measured 7 MiB)

linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps (Linux)")


@pytest.fixture(scope="module")
def synthetic_q8(tmp_path_factory):
    """A 4-layer Q8_0 model with ~12 MiB of q4_0 runtime weights and an 8k vocabulary (random weights)."""
    from lowbit import synthetic
    p = tmp_path_factory.mktemp("mem") / "mem.gguf"
    synthetic.SHAPES.setdefault("memtest", synthetic.Shape(512, 4, 1536, 8, 4, 8192, ctx=1024))
    synthetic.write(p, "memtest", "q8_0")
    return p


def test_reader_is_freed_after_load(monkeypatch):
    refs = []
    real = lowbit_gguf.open_reader

    def spy(path):
        r = real(path)
        refs.append(weakref.ref(r))
        return r
    monkeypatch.setattr(lowbit_gguf, "open_reader", spy)
    llm = lowbit.load(STORIES, n_ctx=64)
    gc.collect()
    assert len(refs) == 1
    assert refs[0]() is None, "the GGUF reader (metadata, vocabulary, file mapping) outlives load()"
    assert llm.generate("Once", max_tokens=4, temperature=0)        # still a working model


@linux_only
def test_consumed_tensor_pages_leave_rss(synthetic_q8):
    from lowbit.api import _mapped_rss
    src = lowbit_gguf.GGUFSource(synthetic_q8)
    a = src.raw("token_embd.weight")
    assert int(np.asarray(a).sum(dtype=np.uint64)) > 0         # fault every page of the embedding in
    before = _mapped_rss(synthetic_q8)
    assert before >= a.nbytes
    src.raw("blk.0.attn_q.weight")                               # the builder moved on
    after = _mapped_rss(synthetic_q8)
    assert after <= before - a.nbytes + 2 * 4096
    assert np.array_equal(np.asarray(a[:3]), np.asarray(src.raw("token_embd.weight")[:3]))   # data still readable
    src.close()


@linux_only
@pytest.mark.parametrize("pure", [False, True])
def test_rss_added_by_loading_is_bounded(synthetic_q8, pure):
    code = ("import gguf, tokenizers, json, lowbit; "             # libraries in the baseline: count loading only
            f"m = lowbit.load({str(synthetic_q8)!r}, pure={pure}); "
            "print(json.dumps([m.model.weight_bytes, m.rss_before_load, m.rss_after_load, m.rss_model_added, "
            "m.rss_tokenizer_added]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    w, before, after, model_added, tok_added = json.loads(out.strip().splitlines()[-1])
    print(f"weights {w / MiB:.1f} MiB: RSS added {(after - before) / MiB:.1f} MiB (tokenizer {tok_added / MiB:.1f}, "
          f"weights + buffers {model_added / MiB:.1f})")
    assert model_added <= MODEL_FACTOR * w + MODEL_SLACK
    assert after - before <= MODEL_FACTOR * w + MODEL_SLACK + TOKENIZER_SLACK

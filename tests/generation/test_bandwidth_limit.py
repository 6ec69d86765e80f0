"""The bandwidth limit each row is read against: never below what a row provably read."""

import pytest

from nano.generation import lm_search
from nano.generation.lm_search import GenerationSearch, LMResult
from nano.generation.timing import Speed, last_level_cache_bytes

MB = 10**6


def _search(rows):
    search = GenerationSearch.__new__(GenerationSearch)  # the rows alone, no model
    search.rows = rows
    return search


def _row(method, bytes_per_step, tokens_per_s):
    return LMResult(method, "ok", speeds=[Speed(1, 0.1, tokens_per_s)],
                    bytes_per_step=bytes_per_step)


@pytest.fixture
def cache_of_300_mb(monkeypatch):
    monkeypatch.setattr(lm_search, "last_level_cache_bytes", lambda: 300 * MB)


def test_a_row_streaming_from_memory_faster_than_the_read_raises_the_limit(cache_of_300_mb):
    big = _row("onnxruntime_fp32", 1700 * MB, 19.0)  # 32.3 GB/s, far beyond the cache
    small = _row("onnxruntime_int4", 200 * MB, 200.0)  # 40 GB/s, but it fits in the cache
    search = _search([big, small])
    search._set_limits(26.5e9)
    assert search.bandwidth == pytest.approx(1700 * MB * 19.0)
    assert search.bandwidth_from == "onnxruntime_fp32's decode"
    assert big.decode_tokens_per_s(1) / big.limit_tokens_per_s == pytest.approx(1.0)
    assert small.limit_tokens_per_s == pytest.approx(search.bandwidth / (200 * MB))


def test_the_measured_read_stands_when_no_row_read_faster(cache_of_300_mb):
    row = _row("pytorch_fp32", 1700 * MB, 14.0)  # 23.8 GB/s
    skipped = LMResult("openvino_int4", "skipped", "not installed")
    search = _search([row, skipped])
    search._set_limits(26.5e9)
    assert (search.bandwidth, search.bandwidth_from) == (26.5e9, "a 1 GiB read")
    assert row.limit_tokens_per_s == pytest.approx(26.5e9 / (1700 * MB))
    assert skipped.limit_tokens_per_s is None


def test_the_largest_cache_is_read_from_sysfs(tmp_path):
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "307200K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert last_level_cache_bytes(str(tmp_path)) == 300 * 2**20
    assert last_level_cache_bytes(str(tmp_path / "none")) == 0

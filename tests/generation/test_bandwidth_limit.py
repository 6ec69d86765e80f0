"""The bandwidth limit each row is read against: the most shown at its own working set or a
larger one, so a step that fits a CPU cache is held to the cache's speed and no row shows
more than 100%."""

import pytest

from nano.generation.lm_search import GenerationSearch, LMResult
from nano.generation.timing import Speed, read_bandwidth

MB = 10**6


def _search(rows):
    search = GenerationSearch.__new__(GenerationSearch)  # the rows alone, no model
    search.rows = rows
    search._set_limits()
    return search


def _row(method, bytes_per_step, tokens_per_s, read):
    return LMResult(method, "ok", speeds=[Speed(1, 0.1, tokens_per_s)],
                    bytes_per_step=bytes_per_step, read_bytes_per_s=read)


def test_a_step_that_fits_the_cache_is_held_to_the_reads_of_its_own_size():
    big = _row("pytorch_fp32", 1700 * MB, 14.0, 35e9)  # 23.8 GB/s from memory
    small = _row("onnxruntime_int4", 216 * MB, 150.0, 64e9)  # 32.4 GB/s, from the cache
    _search([big, small])
    assert (small.bandwidth, small.bandwidth_from) == (64e9, "a read of 216 MB")
    assert small.decode_tokens_per_s(1) / small.limit_tokens_per_s == pytest.approx(216 * 150 / 64e3)
    assert (big.bandwidth, big.bandwidth_from) == (35e9, "a read of 1700 MB")
    assert big.limit_tokens_per_s == pytest.approx(35e9 / (1700 * MB))


def test_a_decode_faster_than_the_reads_raises_the_limit_of_its_size_and_smaller_ones():
    big = _row("onnxruntime_fp32", 1700 * MB, 19.0, 26.5e9)  # streamed 32.3 GB/s
    middle = _row("onnxruntime_int8", 500 * MB, 50.0, 30e9)
    small = _row("onnxruntime_int4", 216 * MB, 150.0, 64e9)
    larger = _row("openvino_fp32", 1800 * MB, 10.0, 25e9)  # not raised by a smaller step
    _search([big, middle, small, larger])
    assert big.bandwidth == pytest.approx(1700 * MB * 19.0)
    assert big.bandwidth_from == "onnxruntime_fp32's decode"
    assert big.decode_tokens_per_s(1) / big.limit_tokens_per_s == pytest.approx(1.0)
    assert middle.bandwidth_from == "onnxruntime_fp32's decode"
    assert small.bandwidth_from == "a read of 216 MB"  # its own read is higher still
    assert (larger.bandwidth, larger.bandwidth_from) == (25e9, "a read of 1800 MB")


def test_no_row_shows_more_than_its_limit_and_rows_that_did_not_run_have_none():
    rows = [_row("a", 300 * MB, 200.0, 20e9), _row("b", 300 * MB, 50.0, 20e9),
            _row("c", 900 * MB, 40.0, 30e9)]  # a: 60 GB/s, far above every read
    skipped = LMResult("openvino_int4", "skipped", "not installed")
    _search([*rows, skipped])
    for row in rows:
        assert row.decode_tokens_per_s(1) <= row.limit_tokens_per_s * (1 + 1e-9)
    assert skipped.limit_tokens_per_s is None and not skipped.bandwidth


def test_a_read_reports_bytes_per_second_of_a_buffer_of_the_size_asked():
    rate = read_bandwidth(8 * MB, repeats=2)
    assert 1e8 < rate < 1e13

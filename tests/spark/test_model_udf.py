"""nano.spark.model_udf / predict from the user's side: outputs equal the model's own on fresh
rows, several inputs and outputs, workers pinned, a lost task retried, bad input in one line."""

import numpy as np
import pytest
import torch

import nano.spark as ns
from nano import InferenceOptimizer
from nano.errors import DataMismatch, NanoTypeError, NanoValueError
from nano.runtimes.model_files import ModelLoadError
from tests.spark.models import DiesOnce, NestedOutputs, WhereItRuns


def _images(spark, x, partitions=3):
    rows = [(i, x[i].flatten().tolist()) for i in range(len(x))]
    return spark.createDataFrame(rows, "id long, features array<float>").repartition(partitions)


def _collect(df, column):
    """(ids, stacked outputs) in id order; every id must be there exactly once."""
    frame = df.orderBy("id").toPandas()
    return frame["id"].to_numpy(), np.stack(frame[column].to_numpy())


@pytest.mark.slow
def test_cnn_outputs_equal_the_model_on_fresh_rows(spark, digits, digits_cnn):
    (_, _), (test_x, _) = digits  # held-out digits: not the traced sample
    x = test_x[:300]
    df = _images(spark, x)
    expected = digits_cnn(x).detach().numpy()
    # an OpenVINO model needs no Python class on the workers, and knows its own input shape
    ov = InferenceOptimizer.trace(digits_cnn, accelerator="openvino", input_sample=test_x[-4:])
    f = ns.model_udf(ov, batch_size=32)
    ids, got = _collect(df.withColumn("logits", f("features")), "logits")
    np.testing.assert_array_equal(ids, np.arange(len(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_two_input_minilm_from_a_saved_directory(spark, tmp_path):
    from nano.models.minilm import SENTENCES, load_minilm

    tokenizer, model = load_minilm()
    def encode(sentences):
        t = tokenizer(sentences, padding="max_length", max_length=24, truncation=True,
                      return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    sample = encode(SENTENCES[:4])
    onnx = InferenceOptimizer.trace(model, accelerator="onnxruntime", input_sample=sample)
    InferenceOptimizer.save(onnx, str(tmp_path / "minilm"))
    fresh = SENTENCES[4:40]
    ids, mask = encode(fresh)
    rows = [(i, ids[i].tolist(), mask[i].tolist()) for i in range(len(fresh))]
    df = spark.createDataFrame(rows, "id long, input_ids array<int>, attention_mask array<int>")
    out = ns.predict(df.repartition(2), str(tmp_path / "minilm"), ["input_ids", "attention_mask"],
                     output="embedding", batch_size=8)
    got_ids, got = _collect(out, "embedding")
    np.testing.assert_array_equal(got_ids, np.arange(len(fresh)))
    with torch.no_grad():
        expected = model(ids, mask).numpy()
    assert got.shape == expected.shape == (len(fresh), 384)
    cosine = ((got * expected).sum(1) / np.linalg.norm(got, axis=1)
              / np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.9999


@pytest.mark.slow
def test_nested_outputs_become_columns(spark):
    model = NestedOutputs().eval()
    x = torch.randn(40, 4)
    mask = torch.randint(0, 2, (40, 2))
    rows = [(i, x[i].tolist(), mask[i].tolist()) for i in range(40)]
    df = spark.createDataFrame(rows, "id long, x array<float>, m array<long>").repartition(2)
    f = ns.model_udf(model, batch_size=16, input_shapes=[[4], [2]],
                     input_dtypes=["float32", "int64"])
    assert f.output_names == ["scores", "count", "extra_0"]
    frame = ns.predict(df, f, ["x", "m"], output="y").orderBy("id").toPandas()
    assert list(frame.columns) == ["id", "x", "m", "y_scores", "y_count", "y_extra_0"]
    expected = model(x, mask)
    np.testing.assert_allclose(np.stack(frame["y_scores"]), expected["scores"].detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(frame["y_count"].to_numpy(), expected["count"].numpy())
    np.testing.assert_allclose(frame["y_extra_0"].to_numpy(),
                               expected["extra"][0].detach().numpy(), rtol=1e-5, atol=1e-5)
    # the struct form: one column with a field per output
    struct = df.withColumn("y", f("x", "m")).select("id", "y.count").orderBy("id").toPandas()
    np.testing.assert_array_equal(struct["count"].to_numpy(), expected["count"].numpy())


@pytest.mark.slow
def test_each_worker_loads_the_model_once_takes_its_own_cores_and_sizes_its_threads(spark):
    import os

    x = torch.zeros(400, 1)
    df = spark.createDataFrame([(i, [0.0]) for i in range(400)], "id long, x array<float>")
    model = WhereItRuns()
    f = ns.model_udf(model, batch_size=10, input_shapes=[[1]])
    model.calls = 0  # the driver's check ran it once; the workers get it as it is now
    frame = ns.predict(df.repartition(6), f, ["x"], output="y").toPandas()
    seen = {tuple(v) for v in frame["y_0"]}
    calls: dict = {}
    for pid, count in {tuple(v) for v in frame["y_1"]}:
        calls.setdefault(pid, set()).add(count)
    # each worker loaded the model once and used that copy for every batch of all its tasks
    # (6 partitions on fewer workers): its call counts run 1..n without starting again
    assert sum(len(c) for c in calls.values()) >= 6
    assert all(c == set(range(1, len(c) + 1)) for c in calls.values()), calls
    assert len(calls) < 6
    task_cpus = int(spark.conf.get("spark.task.cpus"))
    assert {threads for _, _, threads, _ in seen} == {task_cpus}
    if len(os.sched_getaffinity(0)) >= 2 * task_cpus:
        assert {n for n, _, _, _ in seen} == {task_cpus}  # pinned, not the whole machine
    # bigdl-nano-init's allocator reaches the workers where this machine has one
    preload = spark.conf.get("spark.executorEnv.LD_PRELOAD", "")
    assert {bool(p) for _, _, _, p in seen} == {"malloc" in preload}
    assert len(x) == len(frame)


@pytest.mark.slow
def test_a_task_killed_mid_partition_is_retried_and_no_row_is_lost_or_doubled(spark, tmp_path):
    killed = tmp_path / "killed"
    model = DiesOnce(str(killed)).eval()
    x = torch.randn(600, 4)
    df = spark.createDataFrame([(i, x[i].tolist()) for i in range(600)],
                               "id long, x array<float>").repartition(3)
    f = ns.model_udf(model, batch_size=50, input_shapes=[[4]])
    ids, got = _collect(df.withColumn("y", f("x")), "y")
    assert killed.exists()  # the worker did die mid-partition
    np.testing.assert_array_equal(ids, np.arange(600))  # every row, once
    np.testing.assert_allclose(got, model.linear(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


@pytest.mark.slow
def test_bad_input_is_one_line_on_the_driver_before_the_job(spark, tmp_path, digits_cnn):
    df = spark.createDataFrame([(0, [0.0] * 64, "a", [0.0] * 10)],
                               "id long, features array<float>, text string, short array<float>")
    with pytest.raises(ModelLoadError) as e:
        ns.model_udf(str(tmp_path / "missing"))
    assert "is not a directory" in _one_line(e)

    InferenceOptimizer.save(digits_cnn, str(tmp_path / "state"))  # a state dict
    with pytest.raises(ModelLoadError) as e:
        ns.model_udf(str(tmp_path / "state"))
    assert "original=" in _one_line(e)
    assert ns.model_udf(str(tmp_path / "state"), original=digits_cnn,
                        input_shapes=[[1, 8, 8]]).output_names == ["prediction"]
    weights = next(p for p in (tmp_path / "state").iterdir() if p.suffix in (".pt", ".pth", ".bin"))
    with open(weights, "r+b") as fh:  # damaged on disk: its checksum no longer matches
        fh.seek(100)
        fh.write(b"\0\0\0\0")
    with pytest.raises(ModelLoadError) as e:
        ns.model_udf(str(tmp_path / "state"), original=digits_cnn)
    _one_line(e)

    with pytest.raises(NanoTypeError) as e:
        ns.model_udf(lambda x: x)
    _one_line(e)
    with pytest.raises(DataMismatch) as e:  # shapes the model cannot take
        ns.model_udf(digits_cnn, input_shapes=[[3, 8, 8]])
    assert "does not run on inputs of shape(s) [[3, 8, 8]]" in _one_line(e)
    with pytest.raises(NanoValueError) as e:
        ns.model_udf(digits_cnn, input_shapes=[[1, 8, 0]])
    _one_line(e)

    f = ns.model_udf(digits_cnn, input_shapes=[[1, 8, 8]])
    cases = [(["text"], "is string"), (["short"], "holds 10 values per row"),
             (["nope"], "no column 'nope'"), (["features", "features"], "takes 1 input(s)"),
             (["id"], "one number per row")]
    for columns, words in cases:
        with pytest.raises(DataMismatch) as e:
            ns.predict(df, f, columns)
        assert words in _one_line(e)
    with pytest.raises(DataMismatch) as e:
        f("features", "text")
    _one_line(e)
    with pytest.raises(DataMismatch) as e:
        ns.predict(df, f, ["features"], output="id")
    assert "already has column" in _one_line(e)


@pytest.mark.slow
def test_a_dataframe_sample_feeds_optimize(spark, digits):
    (_, _), (test_x, test_y) = digits
    rows = [(test_x[i].flatten().tolist(), int(test_y[i])) for i in range(64)]
    df = spark.createDataFrame(rows, "features array<float>, label long")
    loader = ns.sample(df, ["features"], input_shapes=[[1, 8, 8]], label="label", rows=48,
                       batch_size=16)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x, test_x[:16])
    assert sum(len(b[0]) for b in loader) == 48

    # optimize() on a DataFrame as it is: each column an input in order, a last extra one
    # the target
    opt = InferenceOptimizer()
    flat = spark.createDataFrame([([float(i)] * 3, float(2 * i)) for i in range(40)],
                                 "x array<double>, y double")
    linear = torch.nn.Linear(3, 1).eval()
    opt.optimize(linear, training_data=flat, accelerator="jit", precision="fp32",
                 search_mode="grid", latency_sample_num=5, final_round=False)
    rows = {r.name: r for r in opt.results}
    assert rows["jit_fp32"].status == "ok", rows["jit_fp32"].detail
    fresh = torch.randn(5, 3)
    torch.testing.assert_close(opt.get_model("jit_fp32")(fresh), linear(fresh))
    words = spark.createDataFrame([("a", 1.0)], "text string, y double")
    with pytest.raises(DataMismatch) as e:
        opt.optimize(linear, training_data=words)
    assert "'text' is string" in _one_line(e)


def test_a_session_already_running_is_used_unchanged(spark):
    assert ns.spark_session() is spark
    conf = ns.worker_conf(2)
    assert conf["spark.task.cpus"] == "2" and conf["spark.executorEnv.OMP_NUM_THREADS"] == "2"
    assert not any(k.endswith(("OMP_PROC_BIND", "OMP_PLACES")) for k in conf)


def test_the_drivers_check_leaves_a_training_module_as_it_was(spark):
    from tests.inference.models import SmallCNN

    model = SmallCNN().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    f = ns.model_udf(model, input_shapes=[[1, 8, 8]])
    assert f.output_names == ["prediction"]
    assert model.training  # the workers' copies run in eval mode; the user's module is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

"""Nano on Spark: rows/s of all-MiniLM-L6-v2 sentence embeddings over a parquet of tokenized
sentences, on a ``local[N]`` Spark session (N = usable cores), side by side in one run:

* ``plain``: Spark's own ``predict_batch_udf`` calling the PyTorch model (what a Spark user
  writes today; in Nano's session, so each worker has one thread per task core, as Nano's);
* ``nano``: ``nano.spark.predict`` with the model ``optimize()`` picks for one core per worker;
* ``multi-instance``: ``to_multi_instance`` with N processes on the same machine, no Spark,
  for the pick and for the original (the pick's single-machine speed-up).

Target: Nano on Spark keeps >= 80% of the pick's single-machine speed-up over plain PyTorch on
Spark, and its embeddings keep cosine >= 0.99 to the plain ones on every checked row. Rows/s
are of writing the column to Spark's no-op sink, so collecting the outputs is not timed.

    python benchmarks/spark.py [--rows 20000] [--batch 64] [--rounds 2] [--checked 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

SEQ = 32


def sentences(n: int) -> list[str]:
    """``n`` sentences: the demo's 60-odd sentences joined in pairs, in a fixed order."""
    from nano.models.minilm import SENTENCES

    rng = np.random.default_rng(0)
    a = rng.integers(0, len(SENTENCES), n)
    b = rng.integers(0, len(SENTENCES), n)
    return [f"{SENTENCES[i]} {SENTENCES[j]}" for i, j in zip(a, b)]


def write_parquet(spark, tokenizer, n: int, path: str) -> None:
    rows = []
    for start in range(0, n, 1000):
        chunk = sentences(n)[start:start + 1000]
        t = tokenizer(chunk, padding="max_length", truncation=True, max_length=SEQ)
        rows += [(start + i, ids, mask) for i, (ids, mask)
                 in enumerate(zip(t["input_ids"], t["attention_mask"]))]
    spark.createDataFrame(rows, "id long, input_ids array<int>, attention_mask array<int>") \
        .repartition(8).write.parquet(path)


def plain_udf(batch: int):
    """What a Spark user writes today: load the model in make_predict_fn, call it per batch."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn():
        from nano.models.minilm import load_minilm

        model = load_minilm()[1]

        def predict(ids, mask):
            with torch.no_grad():
                return model(torch.from_numpy(ids).long(), torch.from_numpy(mask).long()).numpy()
        return predict
    return predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()),
                             batch_size=batch, input_tensor_shapes=[[SEQ], [SEQ]])


def spark_rate(df, column) -> float:
    """Rows/s of computing ``column`` for every row, written to Spark's no-op sink (the
    engine and the model, without collecting 20,000 embeddings on the driver)."""
    rows = df.count()
    started = time.perf_counter()
    df.select(column.alias("out")).write.format("noop").mode("overwrite").save()
    return rows / (time.perf_counter() - started)


def spark_outputs(df, column, rows: int) -> np.ndarray:
    """The first ``rows`` rows' outputs, in id order."""
    frame = df.orderBy("id").limit(rows).select("id", column.alias("out")).toPandas()
    assert (frame["id"].to_numpy() == np.arange(rows)).all()
    return np.stack(frame["out"].to_numpy())


def multi_instance_rate(model, batches: list, processes: int) -> float:
    from nano import InferenceOptimizer

    with InferenceOptimizer.to_multi_instance(model, processes) as pool:
        pool(batches[:processes])  # warm-up: load and first calls
        started = time.perf_counter()
        pool(batches)
        return sum(len(b[0]) for b in batches) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--checked", type=int, default=2000,
                        help="rows whose embeddings are compared with plain PyTorch's")
    args = parser.parse_args()

    from nano import InferenceOptimizer
    from nano.demo import COMPILE_METHODS, minilm_search
    from nano.launcher.capability import current
    from nano.launcher.topology import read_topology
    from nano.models.minilm import load_minilm, unavailable_reason
    import nano.spark as ns

    if unavailable_reason():
        print(f"needs the MiniLM weights: {unavailable_reason()}", file=sys.stderr)
        return 2
    cores = len(read_topology().usable_cores())
    print(f"CPU: {'; '.join(current().describe()[:2])}; {cores} cores")
    model, training, validation, cosine = minilm_search(args.batch)
    opt = InferenceOptimizer()
    opt.optimize(model, training, validation_data=validation, metric=cosine, thread_num=1,
                 excludes=COMPILE_METHODS, latency_sample_num=20, latency_budget=3)
    pick, _ = opt.get_best_model(accuracy_criterion=0.01)
    print(f"optimize() pick for one core per worker: {pick.method.name}")

    spark = ns.spark_session()
    tokenizer = load_minilm()[0]
    with tempfile.TemporaryDirectory(prefix="nano-bench-spark-") as tmp:
        path = os.path.join(tmp, "sentences.parquet")
        write_parquet(spark, tokenizer, args.rows, path)
        df = spark.read.parquet(path)
        plain = plain_udf(args.batch)
        nano_f = ns.model_udf(pick, batch_size=args.batch)
        ns.predict(df.limit(8), nano_f, ["input_ids", "attention_mask"]).count()  # checks
        rates: dict = {"plain": [], "nano": []}
        for _ in range(args.rounds):  # interleaved: the machine's noise hits both
            rates["plain"].append(spark_rate(df, plain("input_ids", "attention_mask")))
            rates["nano"].append(spark_rate(df, nano_f("input_ids", "attention_mask")))
        plain_out = spark_outputs(df, plain("input_ids", "attention_mask"), args.checked)
        nano_out = spark_outputs(df, nano_f("input_ids", "attention_mask"), args.checked)
        cos = (plain_out * nano_out).sum(1) / (np.linalg.norm(plain_out, axis=1)
                                              * np.linalg.norm(nano_out, axis=1))
        head = df.orderBy("id").limit(args.batch * 100).toPandas()
        ids = torch.from_numpy(np.stack(head["input_ids"].to_numpy())).long()
        mask = torch.from_numpy(np.stack(head["attention_mask"].to_numpy())).long()
        batches = [(ids[i:i + args.batch], mask[i:i + args.batch])
                   for i in range(0, len(ids), args.batch)]
        single = {"original": multi_instance_rate(model, batches, cores),
                  "pick": multi_instance_rate(pick, batches, cores)}
    spark.stop()

    best = {k: max(v) for k, v in rates.items()}
    on_spark = best["nano"] / best["plain"]
    alone = single["pick"] / single["original"]
    print(f"\n{args.rows} rows, batch {args.batch}, Spark local[{cores}], best of {args.rounds}")
    print(f"{'run':42} {'rows/s':>9} {'ratio':>7}")
    print(f"{'Spark predict_batch_udf, plain PyTorch':42} {best['plain']:9.1f} {1:7.2f}x")
    nano_run = "Spark nano.spark.predict, " + pick.method.name
    print(f"{nano_run:42} {best['nano']:9.1f} {on_spark:7.2f}x")
    print(f"{'to_multi_instance, original (no Spark)':42} {single['original']:9.1f} "
          f"{single['original'] / best['plain']:7.2f}x")
    print(f"{'to_multi_instance, ' + pick.method.name + ' (no Spark)':42} {single['pick']:9.1f} "
          f"{single['pick'] / best['plain']:7.2f}x")
    kept = on_spark / alone
    print(f"\npick's speed-up: {alone:.2f}x alone, {on_spark:.2f}x on Spark: {kept:.0%} kept "
          f"(target >= 80%) {'met' if kept >= 0.8 else 'NOT met'}")
    print(f"smallest cosine to plain PyTorch over the first {args.checked} rows: {cos.min():.4f} "
          f"(target >= 0.99) "
          f"{'met' if cos.min() >= 0.99 else 'NOT met'}")
    print(f"Spark's engine overhead for the pick: {best['nano'] / single['pick']:.2f}x "
          f"multi-instance rows/s")
    return 0 if kept >= 0.8 and cos.min() >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())

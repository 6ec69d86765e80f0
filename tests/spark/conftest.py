"""One local Spark session for the Spark tests (its JVM takes seconds to start), and the test
modules whose code runs in Spark workers shipped by value (workers do not import ``tests``)."""

import pytest


@pytest.fixture(scope="session")
def spark():
    import pyspark.cloudpickle as cloudpickle

    import nano.spark
    import tests.compat.training_jobs
    import tests.inference.models
    import tests.spark.jobs
    import tests.spark.models

    for module in (tests.compat.training_jobs, tests.inference.models, tests.spark.jobs,
                   tests.spark.models):
        cloudpickle.register_pickle_by_value(module)
    session = nano.spark.spark_session()
    yield session
    session.stop()

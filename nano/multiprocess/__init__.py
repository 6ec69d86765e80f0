"""Multi-instance inference: N pinned worker processes serving one model.

``pool.MultiInstanceModel`` is what ``InferenceOptimizer.to_multi_instance``
returns; ``instance_server`` is the process each instance runs; ``transport`` moves
tensors through shared memory.

Imports ``nano.runtimes`` (each worker loads a saved model) and below; imported by the
facade (``to_multi_instance``, ``measure_throughput``) and the CLIs.
"""

"""Multi-instance inference: N pinned worker processes serving one model.

``pool.MultiInstanceModel`` is what ``InferenceOptimizer.to_multi_instance``
returns; ``instance_server`` is the process each instance runs; ``transport`` moves
tensors through shared memory.
"""

"""The sections of ``scripts/bench.py``, one concern per module: ``common`` (networks, worker
processes, GEMM rate, memory), ``flops`` (the flop model behind the limit), ``dense``,
``conv``, ``adam``, ``memory``, ``authors`` (beside the paper authors' code) and ``kernels``
(each native kernel beside its pure-JAX path)."""

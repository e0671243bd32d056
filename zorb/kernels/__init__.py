"""What makes the fit fast on a CPU: native products (``products``), solves (``solve``), Sigmoid/Tanh
inverses (``squash``) and conv passes (``conv``), each one ``.cc`` file of the extension
``_native`` (XLA FFI handlers into BLAS/LAPACK, sharing the worker pool of ``pool.cc``) beside
its Python wrapper, with a pure-JAX equivalent that ``native`` selects where the extension is
absent or turned off, the arrays are not float64, or the backend is not the CPU; the float64
special functions they share (``special``); and the opt-in process tuning (``allocator``,
``cpu``, ``threads``, ``tuning``). Nothing here imports the algorithm."""

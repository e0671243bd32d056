"""What makes the fit fast on a CPU: native products, solves, inverses and conv passes (XLA FFI
handlers into BLAS/LAPACK), each with a pure-JAX equivalent used where the extension is absent or
the backend is not the CPU; the float64 special functions they share; and the opt-in process
tuning (allocator, OpenBLAS kernels, thread limits). Nothing here imports the algorithm."""

"""zorb.kernels.cpu: when zorb lets OpenBLAS use its AVX-512 kernels, read from a cpuinfo file."""

import pytest

from zorb.kernels import cpu

AVX512 = "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"


def cpuinfo(tmp_path, vendor, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 26\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize("vendor,flags,environ,expected", [
    ("AuthenticAMD", AVX512, {}, "SkylakeX"),
    ("AuthenticAMD", AVX512.replace(" avx512vl", ""), {}, None),      # a subset the kernels need is missing
    ("AuthenticAMD", "fpu sse2 avx avx2 fma", {}, None),              # AVX2 only: OpenBLAS's own choice
    ("GenuineIntel", AVX512, {}, None),                                # OpenBLAS knows Intel's CPUs
    ("AuthenticAMD", AVX512, {"OPENBLAS_CORETYPE": "Haswell"}, None),  # the user's setting is kept
    ("AuthenticAMD", AVX512, {"ZORB_OPENBLAS_TUNING": "0"}, None),
])
def test_openblas_coretype(tmp_path, vendor, flags, environ, expected):
    assert cpu.openblas_coretype(environ, cpuinfo(tmp_path, vendor, flags)) == expected


def test_unreadable_cpuinfo_changes_nothing(tmp_path):
    assert cpu.openblas_coretype({}, str(tmp_path / "missing")) is None

"""Build of fastconv's compiled core.

The kernel files (src/fastconv/csrc/kernels/*.c, one per family, and the
benchmark's FMA probe) are compiled once per instruction set and dtype, each
with its own flags and configuration (csrc/configs/<isa>.h), and linked into
the one extension module fastconv._core next to the operators (csrc/operators/)
and the dispatch code that picks a kernel set at run time. Nothing is compiled
with -march=native, so a wheel built here runs on any x86-64; on other CPUs
only the portable kernels are built.

Environment:
    FASTCONV_NO_OPENMP=1   build without OpenMP (single-threaded kernels)
    FASTCONV_EXTRA_CFLAGS  extra compiler flags (split like a shell command
                           line), added last to every C object: the kernel
                           objects, the operators, dispatch.c and the Cython
                           module, so they
                           override the defaults (e.g. "-O1 -g
                           -fsanitize=address,undefined", as
                           scripts/sanitize.sh does; "-g" alone: a
                           build with debug information, which the
                           default -g0 leaves out)
    FASTCONV_EXTRA_LDFLAGS extra flags for linking the extension module
"""
import glob
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = os.path.join("src", "fastconv", "csrc")
# Compiled once per instruction set and dtype.
KERNELS = sorted(glob.glob(os.path.join(CSRC, "kernels", "*.c"))) + [
    os.path.join(CSRC, "bench", "fma_probe.c")]
# Compiled once, into the module.
OPERATORS = sorted(glob.glob(os.path.join(CSRC, "operators", "*.c"))) + [
    os.path.join(CSRC, "dispatch.c"), os.path.join(CSRC, "scratch.c")]
HEADERS = sorted(glob.glob(os.path.join(CSRC, "**", "*.h"), recursive=True))
# -g0: no debug information in the installed module (Python's own CFLAGS ask
# for -g, which tripled its size); FASTCONV_EXTRA_CFLAGS="-g" builds with it.
BASE_FLAGS = ["-O3", "-std=gnu11", "-fno-math-errno", "-Wall", "-g0"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
# (name, flags): the instruction sets the kernels are compiled for.
TARGETS = [("generic", [])]
if X86:
    TARGETS += [
        ("avx2", ["-mavx2", "-mfma"]),
        ("avx512", ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"]),
    ]


def openmp_flags(compiler):
    """-fopenmp if this compiler can build and link an OpenMP program, else []."""
    if os.environ.get("FASTCONV_NO_OPENMP", "") not in ("", "0"):
        return []
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objs, "omp_probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        return ["-fopenmp"]
    except Exception as exc:  # any compile or link failure means no OpenMP
        print(f"fastconv: building without OpenMP ({exc})", file=sys.stderr)
        return []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extra_flags(name):
    """The flags in environment variable `name`, split like a shell would."""
    return shlex.split(os.environ.get(name, ""))


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError("fastconv needs GCC or Clang (vector extensions)")
        omp = openmp_flags(self.compiler)
        cflags, ldflags = extra_flags("FASTCONV_EXTRA_CFLAGS"), extra_flags("FASTCONV_EXTRA_LDFLAGS")
        for ext in self.extensions:
            def compile_kernels(target):
                (isa, flags), dtype = target
                return self.compiler.compile(
                    KERNELS,
                    output_dir=os.path.join(self.build_temp, f"kernels_{isa}_{dtype.lower()}"),
                    macros=[(f"FC_TARGET_{isa.upper()}", "1"), (f"FC_DTYPE_{dtype}", "1")],
                    include_dirs=[CSRC],
                    extra_postargs=BASE_FLAGS + ["-fPIC"] + flags + omp + cflags,
                    depends=HEADERS,
                )
            # (one compiler process per target at a time, as many as CPUs)
            targets = [(t, dtype) for t in TARGETS for dtype in ("F32", "F64")]
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                objects = [obj for objs in pool.map(compile_kernels, targets) for obj in objs]
            ext.extra_objects = objects + list(ext.extra_objects or [])
            ext.extra_compile_args = list(ext.extra_compile_args or []) + omp + cflags
            ext.extra_link_args = list(ext.extra_link_args or []) + omp + ldflags
        super().build_extensions()


core = Extension(
    "fastconv._core",
    sources=["src/fastconv/_core.pyx"] + OPERATORS,
    include_dirs=[CSRC, numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
    + ([("FC_HAVE_X86_KERNELS", "1")] if X86 else []),
    extra_compile_args=["-O2", "-g0"],
    depends=KERNELS + HEADERS + ["src/fastconv/_kernels.pxd"],
)

setup(
    ext_modules=cythonize([core], compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)

"""Builds lowbit._core. Each ISA-specific directory is compiled with only its own flags; everything else at
the architecture's baseline, so the module imports on every CPU of the architecture (never -march=native).
The kernel used is chosen at import from cpuid / getauxval (csrc/dispatch.c)."""
import glob
import os
import platform
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BASE_FLAGS = ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
# directory -> (architectures, flags); a directory's files are built only on its architectures
ISA_DIRS = {
    "csrc/x86_avx2": (("x86_64", "amd64"), ["-mavx2", "-mfma", "-mf16c"]),
    "csrc/arm_neon": (("aarch64", "arm64"), ["-march=armv8-a"]),
    "csrc/arm_dotprod": (("aarch64", "arm64"), ["-march=armv8.2-a+dotprod"]),
    "csrc/arm_i8mm": (("aarch64", "arm64"), ["-march=armv8.2-a+dotprod+i8mm"]),
    "csrc/arm_sve": (("aarch64", "arm64"), ["-march=armv8.2-a+dotprod+i8mm+sve"]),
}


def target_arch():
    plat = sysconfig.get_platform()  # honours cross builds (e.g. linux-aarch64 under an emulated python)
    for arch in ("x86_64", "amd64", "aarch64", "arm64"):
        if arch in plat:
            return arch
    return platform.machine().lower()


ARCH = target_arch()
COMMON = sorted(glob.glob("csrc/common/*.c") + glob.glob("csrc/ref/*.c") + glob.glob("csrc/ops/*.c"))
COMMON += ["csrc/dispatch.c", "csrc/module.c"]
MACROS = []
if ARCH in ("aarch64", "arm64") and glob.glob("csrc/arm_sve/*.c"):
    MACROS.append(("LB_HAVE_SVE", "1"))


class IsaBuildExt(build_ext):
    def build_extension(self, ext):
        objects = []
        for d, (arches, flags) in ISA_DIRS.items():
            srcs = sorted(glob.glob(os.path.join(d, "*.c")))
            if ARCH not in arches or not srcs:
                continue
            objects += self.compiler.compile(
                srcs, output_dir=self.build_temp, include_dirs=ext.include_dirs, macros=MACROS,
                extra_postargs=BASE_FLAGS + ["-fPIC"] + flags)
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


setup(
    ext_modules=[Extension(
        "lowbit._core", sources=COMMON, include_dirs=["csrc/include", "csrc"], define_macros=MACROS,
        # ISA objects are linked in as extra_objects: list them (and the headers) so editing one relinks
        depends=sorted(glob.glob("csrc/**/*.c", recursive=True) + glob.glob("csrc/**/*.h", recursive=True)
                       + ["csrc/kernels.inc"]),
        extra_compile_args=BASE_FLAGS, extra_link_args=["-lpthread", "-lm"])],
    cmdclass={"build_ext": IsaBuildExt},
)

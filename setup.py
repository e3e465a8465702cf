"""Build steps beyond the pure-Python package (its metadata stays in pyproject.toml).

Native targets are compiled with the system C compiler by ``build_ext``, into the package: a regular install
gets them in the wheel, an editable install (``pip install -e .``) in the source tree. They are optional: if
the compiler is missing or a build fails, the install still succeeds and ``<target>.unavailable`` beside where
the file would be says why (``sockguard status`` prints it). A CPython extension (``ext_modules``) builds
through the same command; add a :class:`NativeTarget` for anything that is not one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig

from setuptools import Distribution, Extension, setup
from setuptools.command.build_ext import build_ext


class NativeTarget:
    """A C shared object that is not a Python extension: no Python headers, no libpython."""

    def __init__(
        self, package: str, filename: str, sources: list[str], cflags: list[str], libraries: list[str]
    ) -> None:
        self.package = package
        self.filename = filename
        self.sources = sources
        self.cflags = cflags
        self.libraries = libraries


NATIVE_SOURCES = ["native/sg_preload.c", "native/sg_policy.c", "native/sg_dns.c", "native/sg_map.c"]
NATIVE_TARGETS = [
    # The LD_PRELOAD library (docs/native.md): hidden by default, only the interposed libc names exported.
    NativeTarget(
        "sockguard.native",
        "libsockguard.so",
        NATIVE_SOURCES,
        ["-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-std=gnu11"],
        ["dl", "pthread"],
    ),
]


# The audit-hook floor's C accelerator (docs/performance.md): a CPython extension, optional like the preload
# library; sockguard runs the same checks in Python without it (or with SOCKGUARD_ACCELERATOR=0).
ACCELERATOR = Extension(
    "sockguard._accel",
    ["native/sg_accel.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-std=gnu11"],
)


class BinaryDistribution(Distribution):
    """The wheel carries a shared object: tag it for this platform, never py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        """An extension that fails to build leaves ``<module>.unavailable`` where it would be, and the install goes on
        (``sockguard status`` says why the accelerator is off)."""
        note = self.extension_note(ext)
        os.makedirs(os.path.dirname(note) or ".", exist_ok=True)
        if os.path.exists(note):
            os.unlink(note)
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a missing compiler: all optional
            with open(note, "w", encoding="utf-8") as f:
                f.write(f"{ext.name} not built: {type(exc).__name__}: {str(exc).strip()[-2000:]}\n")
            print(f"warning: {ext.name} not built; sockguard installs without it: {exc}")

    def extension_note(self, ext: Extension) -> str:
        output = self.get_ext_fullpath(ext.name)
        return os.path.join(os.path.dirname(output), ext.name.rpartition(".")[2] + ".unavailable")

    def run(self) -> None:
        super().run()  # CPython extensions, if any
        for target in NATIVE_TARGETS:
            self.build_native(target)

    def native_output(self, target: NativeTarget) -> str:
        if self.inplace or getattr(self, "editable_mode", False):
            directory = self.get_finalized_command("build_py").get_package_dir(target.package)
        else:
            directory = os.path.join(self.build_lib, *target.package.split("."))
        return os.path.join(directory, target.filename)

    def build_native(self, target: NativeTarget) -> None:
        output = self.native_output(target)
        note = output + ".unavailable"
        os.makedirs(os.path.dirname(output), exist_ok=True)
        compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        extra = shlex.split(os.environ.get("SOCKGUARD_NATIVE_CFLAGS", ""))
        command = [
            *compiler,
            *target.cflags,
            *extra,
            "-shared",
            "-Wl,-z,defs",
            "-o",
            output + ".tmp",
            *target.sources,
            *(f"-l{lib}" for lib in target.libraries),
        ]
        why = None
        if shutil.which(compiler[0]) is None:
            why = f"no C compiler: {compiler[0]!r} not found (set CC, or install gcc, then reinstall sockguard)"
        else:
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
            except (OSError, subprocess.SubprocessError) as exc:
                why = f"running {compiler[0]} failed: {exc}"
            else:
                if result.returncode != 0:
                    why = f"{' '.join(command)} exited {result.returncode}:\n{result.stderr.strip()[-2000:]}"
        for stale in (output, note):
            if os.path.exists(stale):
                os.unlink(stale)
        if why is None:
            os.replace(output + ".tmp", output)
            print(f"built {output}")
        else:
            if os.path.exists(output + ".tmp"):
                os.unlink(output + ".tmp")
            with open(note, "w", encoding="utf-8") as f:
                f.write(why + "\n")
            print(f"warning: {target.filename} not built; sockguard installs without it: {why}")

    def get_outputs(self) -> list[str]:
        outputs = [path for path in super().get_outputs() if os.path.exists(path)]
        for ext in self.extensions:
            note = self.extension_note(ext)
            if os.path.exists(note):
                outputs.append(note)
        for target in NATIVE_TARGETS:
            output = self.native_output(target)
            outputs.append(output if os.path.exists(output) else output + ".unavailable")
        return outputs


setup(distclass=BinaryDistribution, cmdclass={"build_ext": BuildExt}, ext_modules=[ACCELERATOR])

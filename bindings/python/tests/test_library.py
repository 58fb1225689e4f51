"""Finding and loading libmirage: an explicit path, MIRAGE_LIBRARY, pkg-config, the repository's build; the
error lists every path tried."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from _support import SOURCE, mirage

PACKAGE = os.path.dirname(os.path.abspath(mirage.__file__))


def _run_python(code, env_changes, cwd):
    env = dict(os.environ)
    env.pop("MIRAGE_LIBRARY", None)
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


class LibraryTest(unittest.TestCase):
    def test_loaded_library(self):
        lib = mirage.load_library()
        self.assertTrue(os.path.isfile(lib.path))
        self.assertEqual(mirage.version(), lib.version)
        self.assertEqual(lib.version, mirage.HEADER_VERSION)
        self.assertIs(mirage.load_library(), lib)
        self.assertIs(mirage.find_library(lib.path), lib)  # cached by real path

    def test_explicit_path_that_does_not_exist(self):
        with self.assertRaises(mirage.LibraryNotFound) as cm:
            mirage.find_library("/nonexistent/libmirage.so")
        self.assertIsInstance(cm.exception, mirage.Error)
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.tried, [("/nonexistent/libmirage.so", "no such file")])
        self.assertIn("/nonexistent/libmirage.so: no such file", str(cm.exception))
        with self.assertRaises(mirage.LibraryNotFound):
            mirage.Context("unused", library="/nonexistent/libmirage.so")

    def test_a_file_that_is_not_a_library(self):
        with tempfile.NamedTemporaryFile(suffix=".so") as f:
            f.write(b"not an ELF file")
            f.flush()
            with self.assertRaises(mirage.LibraryNotFound) as cm:
                mirage.find_library(f.name)
            self.assertIn("could not be loaded", str(cm.exception))

    def test_a_library_that_is_not_mirage(self):
        import ctypes.util

        libm = ctypes.util.find_library("m")
        if not libm or os.sep not in libm:
            candidates = [p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/libm.so.6") if os.path.exists(p)]
            if not candidates:
                self.skipTest("no libm path to load")
            libm = candidates[0]
        with self.assertRaises(mirage.LibraryNotFound) as cm:
            mirage.find_library(libm)
        self.assertIn("lacks mirage_", str(cm.exception))

    def test_env_var_and_search_in_a_fresh_process(self):
        lib = mirage.load_library().path
        code = """
            import mirage
            try:
                mirage.load_library()
            except mirage.LibraryNotFound as e:
                print(str(e))
                raise SystemExit(3)
            print("LOADED", mirage.load_library().path)
        """
        with tempfile.TemporaryDirectory() as tmp:
            # A copy of the package far from any build: nothing to find.
            shutil.copytree(PACKAGE, os.path.join(tmp, "mirage"), ignore=shutil.ignore_patterns("__pycache__"))
            empty_pc = os.path.join(tmp, "no-pc")
            os.mkdir(empty_pc)
            no_pc = {"PKG_CONFIG_PATH": empty_pc, "PKG_CONFIG_LIBDIR": empty_pc, "PYTHONPATH": tmp}
            r = _run_python(code, no_pc, tmp)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("$MIRAGE_LIBRARY: not set", r.stdout)
            self.assertIn("pkg-config --variable=libdir mirage", r.stdout)
            for profile in ("release", "debug"):
                self.assertIn(os.path.join(tmp, "mirage", "target", profile, "libmirage.so") + ": no such file",
                              r.stdout)
                self.assertIn(os.path.join(os.sep, "target", profile, "libmirage.so") + ": no such file", r.stdout)

            # MIRAGE_LIBRARY pointing nowhere: that alone is tried.
            r = _run_python(code, dict(no_pc, MIRAGE_LIBRARY=os.path.join(tmp, "nowhere.so")), tmp)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("nowhere.so: no such file", r.stdout)
            self.assertNotIn("pkg-config", r.stdout)

            # MIRAGE_LIBRARY pointing at the library.
            r = _run_python(code, dict(no_pc, MIRAGE_LIBRARY=lib), tmp)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("LOADED " + lib, r.stdout)

            # An installed prefix, found through its mirage.pc.
            if shutil.which("pkg-config"):
                prefix = os.path.join(tmp, "prefix")
                os.makedirs(os.path.join(prefix, "lib", "pkgconfig"))
                os.symlink(lib, os.path.join(prefix, "lib", "libmirage.so.0"))
                with open(os.path.join(prefix, "lib", "pkgconfig", "mirage.pc"), "w") as f:
                    f.write(f"prefix={prefix}\nlibdir=${{prefix}}/lib\n\nName: mirage\nDescription: test\n"
                            "Version: 0.1.0\nLibs: -L${libdir} -lmirage\n")
                pc = os.path.join(prefix, "lib", "pkgconfig")
                r = _run_python(code, dict(no_pc, PKG_CONFIG_PATH=pc, PKG_CONFIG_LIBDIR=pc), tmp)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("LOADED " + os.path.join(prefix, "lib", "libmirage.so.0"), r.stdout)

    def test_repository_build_is_found_from_the_source_tree(self):
        # The source package lives in bindings/python of the repository: walking up reaches target/.
        tried = []
        paths = mirage._native.search_paths(tried, start=os.path.join(SOURCE, "mirage"))
        repo = os.path.dirname(os.path.dirname(SOURCE))
        self.assertIn(os.path.join(repo, "target", "debug", "libmirage.so"), paths)
        self.assertLess(paths.index(os.path.join(repo, "target", "release", "libmirage.so")),
                        paths.index(os.path.join(repo, "target", "debug", "libmirage.so")))


if __name__ == "__main__":
    unittest.main()

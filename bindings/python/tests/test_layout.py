"""The binding's declarations against include/mirage.h: a C program compiled from the header prints the size,
alignment and every field's offset and size of each struct; these, every #define and every function's
parameter list must match what mirage/_native.py declares."""

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from _support import HEADER, mirage  # noqa: F401

from mirage import _errors, _native

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _read_header():
    with open(HEADER, encoding="utf-8") as f:
        return f.read()


def parse_structs(code):
    """C struct name -> its field names in order."""
    structs = {}
    for name, body, closing in re.findall(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", code, flags=re.S):
        assert name == closing, (name, closing)
        fields = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            m = re.search(r"(\w+)\s*(\[[^\]]*\])?$", decl)
            fields.append(m.group(1))
        structs[name] = fields
    return structs


# The <stdint.h> limits a #define of the header may be written with.
_LIMITS = {"UINT32_MAX": (1 << 32) - 1, "UINT64_MAX": (1 << 64) - 1, "INT32_MAX": (1 << 31) - 1,
           "SIZE_MAX": ctypes.c_size_t(-1).value}


def parse_defines(raw):
    out = {}
    for name, value in re.findall(r"^#define\s+(MIRAGE_\w+)[ \t]+(.+?)\s*$", raw, flags=re.M):
        value = value.strip()
        if value in _LIMITS:
            out[name] = _LIMITS[value]
        elif value.startswith('"'):
            out[name] = value.strip('"')
        elif re.fullmatch(r"-?\d+", value):
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


def parse_typedefs(code):
    """typedef <scalar> Name; -> {Name: scalar}."""
    return dict((b, a) for a, b in re.findall(r"typedef\s+(u?int\d+_t|size_t|bool|float)\s+(\w+)\s*;", code))


def parse_functions(code):
    """mirage_* name -> (return type text, [parameter texts])."""
    funcs = {}
    for ret, name, params in re.findall(r"(?:^|[;}\n])\s*([A-Za-z_][\w \t\*]*?)\s*\b(mirage_\w+)\s*\(([^;{}]*?)\)\s*;",
                                        code, flags=re.S):
        params = " ".join(params.split())
        plist = [] if params in ("", "void") else [p.strip() for p in params.split(",")]
        funcs[name] = (" ".join(ret.split()), plist)
    return funcs


_SCALARS = {
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "bool": ctypes.c_bool,
    "float": ctypes.c_float,
}


def _is_pointer_type(t):
    return t in (ctypes.c_void_p, ctypes.c_char_p) or (isinstance(t, type) and issubclass(
        t, (ctypes._Pointer, ctypes._CFuncPtr)))


class HeaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not HEADER or not os.path.isfile(HEADER):
            raise unittest.SkipTest(f"include/mirage.h not found (set MIRAGE_HEADER): {HEADER}")
        cls.raw = _read_header()
        cls.code = _strip_comments(cls.raw)
        cls.structs = parse_structs(cls.code)
        cls.typedefs = parse_typedefs(cls.code)

    def c_type(self, text):
        """A parameter's (or return's) C type, without its name: ('ptr', struct name or None) or ctypes scalar."""
        if "*" in text or "[" in text:
            m = re.search(r"\b(Mirage\w+)\b", text)
            target = m.group(1) if m and m.group(1) in self.structs else None
            return ("ptr", target)
        words = [w for w in text.replace("const", " ").split()]
        base = words[0]
        base = self.typedefs.get(base, base)
        self.assertIn(base, _SCALARS, f"unknown C type {text!r}")
        return _SCALARS[base]

    def test_structs_are_the_headers(self):
        self.assertEqual(set(self.structs), set(_native.STRUCTS), "structs in the header vs the binding")
        for name, fields in self.structs.items():
            declared = [f[0] for f in _native.STRUCTS[name]._fields_]
            self.assertEqual(fields, declared, f"fields of {name}")

    def test_constants_are_the_headers(self):
        defines = parse_defines(self.raw)
        self.assertGreater(len(defines), 30)
        for name, value in defines.items():
            short = name[len("MIRAGE_"):]
            if short == "OK" or short.startswith("ERR_"):
                ours = getattr(_errors, short)
            elif short == "VERSION_STRING":
                ours = _native.HEADER_VERSION
            else:
                self.assertTrue(hasattr(_native, short), f"{name} is not declared in mirage/_native.py")
                ours = getattr(_native, short)
            self.assertEqual(ours, value, name)
        # every status has its exception class
        for name, value in defines.items():
            if name.startswith("MIRAGE_ERR_"):
                cls = _errors.error_class(value)
                self.assertIsNot(cls, _errors.Error, name)
                self.assertEqual(cls.STATUS, value, name)

    def test_functions_are_the_headers(self):
        funcs = parse_functions(self.code)
        self.assertEqual(set(funcs), set(_native.FUNCTIONS), "functions in the header vs the binding")
        for name, (ret, params) in funcs.items():
            restype, argtypes = _native.FUNCTIONS[name]
            if ret == "void":
                self.assertIsNone(restype, name)
            elif "char" in ret and "*" in ret:
                self.assertIs(restype, ctypes.c_char_p, name)
            else:
                self.assertIs(restype, self.c_type(ret), f"return type of {name}")
            self.assertEqual(len(params), len(argtypes), f"parameters of {name}: {params}")
            for k, (text, ours) in enumerate(zip(params, argtypes)):
                theirs = self.c_type(text)
                where = f"{name} parameter {k} ({text})"
                if isinstance(theirs, tuple):
                    self.assertTrue(_is_pointer_type(ours), f"{where}: declared {ours}, not a pointer")
                    struct = theirs[1]
                    if struct is not None and "**" not in text.replace(" ", ""):
                        self.assertIs(ours, ctypes.POINTER(_native.STRUCTS[struct]), where)
                else:
                    self.assertIs(ours, theirs, where)

    def test_callback_types_are_the_headers(self):
        for cname, ours in [("MirageLogCallback", _native.MirageLogCallback),
                            ("MirageProgressCallback", _native.MirageProgressCallback),
                            ("MiragePreviewCallback", _native.MiragePreviewCallback)]:
            m = re.search(r"typedef\s+(\w+)\s*\(\s*\*\s*" + cname + r"\s*\)\s*\(([^;]*?)\)\s*;", self.code, re.S)
            self.assertIsNotNone(m, cname)
            ret, params = m.group(1), [p.strip() for p in " ".join(m.group(2).split()).split(",")]
            self.assertEqual(len(params), len(ours._argtypes_), cname)
            self.assertIs(ours._restype_, None if ret == "void" else self.c_type(ret), cname)
            for text, t in zip(params, ours._argtypes_):
                theirs = self.c_type(text)
                if isinstance(theirs, tuple):
                    self.assertTrue(_is_pointer_type(t), f"{cname}: {text}")
                else:
                    self.assertIs(t, theirs, f"{cname}: {text}")

    @unittest.skipUnless(CC, "no C compiler (cc) found: the layout check from compiled C is skipped")
    def test_layout_compiled_from_the_header(self):
        lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "mirage.h"', "int main(void) {"]
        for name, fields in self.structs.items():
            lines.append(f'    printf("{name} %zu %zu\\n", sizeof({name}), _Alignof({name}));')
            for f in fields:
                lines.append(f'    printf("{name}.{f} %zu %zu\\n", offsetof({name}, {f}), '
                             f"sizeof((({name} *)0)->{f}));")
        lines += ["    return 0;", "}"]
        with tempfile.TemporaryDirectory() as tmp:
            src, exe = os.path.join(tmp, "layout.c"), os.path.join(tmp, "layout")
            with open(src, "w") as f:
                f.write("\n".join(lines) + "\n")
            cc = subprocess.run([CC, "-std=c11", "-Wall", "-I", os.path.dirname(HEADER), "-o", exe, src],
                                capture_output=True, text=True)
            self.assertEqual(cc.returncode, 0, cc.stderr)
            out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
        measured = {}
        for line in out.splitlines():
            key, a, b = line.split()
            measured[key] = (int(a), int(b))
        checked = 0
        for name, fields in self.structs.items():
            cls = _native.STRUCTS[name]
            self.assertEqual((ctypes.sizeof(cls), ctypes.alignment(cls)), measured[name], f"sizeof/_Alignof {name}")
            for f in fields:
                self.assertTrue(hasattr(cls, f), f"{name}.{f} is not declared in the binding")
                desc = getattr(cls, f)
                self.assertEqual((desc.offset, desc.size), measured[f"{name}.{f}"], f"offsetof/sizeof {name}.{f}")
                checked += 1
        self.assertEqual(checked, sum(len(v) for v in self.structs.values()))


if __name__ == "__main__":
    unittest.main()

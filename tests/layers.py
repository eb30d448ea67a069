#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The layer rule as a test (doc/DEVELOPMENT.md): every #include "..." of the products' sources
resolves to the folder that owns the header, and that folder must be allowed:
  qmp/ includes only qmp/; plugin/ only plugin/ and qmp/; sidecar/gate/ only gate, plugin, qmp;
  cli/, daemon/ and libvirt/ only themselves, gate, plugin, qmp (the CLI also sm-libvirt.h, the
  libvirt side's shared conventions), never each other's headers; qmp-private.h and
  probe-private.h stay in their folder (plugin/usb-storage/ does not use the core's either);
  inside daemon/, a component includes only the headers of components below it.
Prints every violation and exits 1 if there is one."""
import os
import re
import subprocess
import sys

top = os.environ.get("SM_SOURCE_ROOT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.chdir(top)
try:
    files = subprocess.run(["git", "ls-files", "qmp", "plugin", "sidecar"], capture_output=True,
                           text=True, check=True).stdout.split()
except (OSError, subprocess.CalledProcessError):
    files = [os.path.join(d, f) for base in ("qmp", "plugin", "sidecar")
             for d, _, fs in os.walk(base) for f in fs]
sources = [f for f in files if f.endswith((".c", ".h"))]


def folder(path):
    """qmp, plugin, plugin/usb-storage, plugin/examples, sidecar/gate, sidecar/cli, ..."""
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def layer(f):
    """The layer a folder belongs to: qmp, plugin, gate, cli, daemon, libvirt."""
    return f.split("/")[-1] if f.startswith("sidecar/") else f.split("/")[0]


owner = {}  # header name -> folder
for f in sources:
    if f.endswith(".h"):
        owner.setdefault(os.path.basename(f), folder(f))

allowed = {
    "qmp": {"qmp"},
    "plugin": {"plugin", "qmp"},
    "gate": {"gate", "plugin", "qmp"},
    "cli": {"cli", "gate", "plugin", "qmp"},
    "daemon": {"daemon", "gate", "plugin", "qmp"},
    "libvirt": {"libvirt", "gate", "plugin", "qmp"},
}
# Headers of one folder that another may include, each for a stated reason.
exceptions = {
    ("sidecar/cli", "sm-libvirt.h"),  # the libvirt side's conventions, for the CLI's libvirt form
    ("plugin", "usb-storage.h"),  # the registry registers the built-in probe
}
# Headers only their own folder includes.
private = {"qmp-private.h": "qmp", "probe-private.h": "plugin"}
# daemon/ components, bottom (0) to top: each includes only headers of a lower or equal rank.
daemon_rank = {"util": 0, "post": 1, "listen": 1, "privilege": 1, "metrics": 2, "control": 3,
               "vm": 3, "mig": 4, "daemon": 5, "ops": 5, "reload": 5}

violations = []
include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
for f in sources:
    here = folder(f)
    with open(f, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    for name in include.findall(text):
        base = os.path.basename(name)
        there = owner.get(base)
        if there is None:
            continue  # generated (sm-config.h) or a system header in quotes
        why = None
        if base in private and here != private[base]:
            why = "is private to %s/" % private[base]
        elif there != here and (here, base) not in exceptions:
            if layer(there) not in allowed[layer(here)]:
                why = "is in %s, which %s/ may not use" % (there, here)
            elif layer(there) == layer(here) and layer(here) != "plugin":
                why = "is private to " + there
        if why is None and here == "sidecar/daemon" and there == here:
            me = daemon_rank.get(os.path.splitext(os.path.basename(f))[0])
            them = daemon_rank.get(os.path.splitext(base)[0])
            if me is not None and them is not None and them > me:
                why = "is above %s in the daemon's components" % os.path.basename(f)
        if why:
            violations.append('%s: #include "%s": %s' % (f, name, why))

for v in violations:
    print(v)
print("layers: %d file(s), %s" % (len(sources), "%d violation(s)" % len(violations)
                                  if violations else "ok"))
sys.exit(1 if violations else 0)

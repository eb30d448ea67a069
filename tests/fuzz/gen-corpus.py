#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Regenerates the fuzzers' seed corpora in tests/fuzz/corpus/ from real sources:
  qmp/     raw bytes QEMU 7.2 and 10.0 sent on a QMP socket during a session that answers
           the fuzz-qmp harness's command ids 1..9 (greeting, replies, errors, STOP/RESUME
           and MIGRATION events), each with the harness's mode byte in front
  wire/    each line of those sessions alone, and libvirt's commands and hostile spellings
           (escapes, single quotes, a NUL, two objects) for fuzz-wire
  stream/  the device-state fixtures of tests/plugin/fixtures (real QEMU dumps)
  policy/  the policy files of the repository (etc/) and the ones the tests use
Usage: tests/fuzz/gen-corpus.py  (SM_QEMU72 / SM_QEMU10 / SM_QEMU10_DATADIR as in the tests)
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out = os.path.join(top, "tests", "fuzz", "corpus")
qemus = {
    "q72": ([os.environ.get("SM_QEMU72", "/usr/bin/qemu-system-x86_64")], None),
    "q10": ([os.environ.get("SM_QEMU10", os.path.join(top, ".qemu10/usr/bin/qemu-system-x86_64"))],
            os.environ.get("SM_QEMU10_DATADIR", os.path.join(top, ".qemu10/usr/share/qemu"))),
}


def session(binary, datadir, tmp):
    """One QMP session; returns every byte QEMU sent, in order."""
    path = os.path.join(tmp, "qmp")
    argv = binary + (["-L", datadir] if datadir else []) + [
        "-nodefaults", "-display", "none", "-accel", "tcg", "-m", "16", "-machine", "pc",
        "-qmp", f"unix:{path},server=on,wait=off",
        "-device", "piix3-usb-uhci,id=uhci,addr=0x2",
        "-drive", "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file=/dev/null",
        "-device", "usb-storage,bus=uhci.0,port=1,drive=cd0,id=usbcd0"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = socket.socket(socket.AF_UNIX)
        for _ in range(500):  # the socket exists a moment before QEMU listens on it
            try:
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.01)
        s.settimeout(10)
        raw = bytearray()
        pending = b""

        def read_until(pred):
            nonlocal pending
            while True:
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    msg = json.loads(line)
                    if pred(msg):
                        return msg
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("QEMU closed the socket")
                raw.extend(chunk)
                pending += chunk

        def cmd(i, name, args=None):
            m = {"execute": name, "id": i}
            if args is not None:
                m["arguments"] = args
            s.sendall(json.dumps(m).encode() + b"\n")
            return read_until(lambda msg: msg.get("id") == i)

        read_until(lambda m: "QMP" in m)
        cmd(1, "qmp_capabilities")
        cmd(2, "query-status")
        cmd(3, "migrate-set-capabilities",
            {"capabilities": [{"capability": "events", "state": True}]})
        cmd(4, "stop")
        cmd(5, "cont")
        cmd(6, "migrate", {"uri": "exec:cat > /dev/null"})
        read_until(lambda m: m.get("event") == "MIGRATION" and
                   m["data"]["status"] in ("completed", "failed"))
        cmd(7, "query-migrate")
        cmd(8, "qom-list", {"path": "/nonexistent"})
        cmd(9, "qom-list", {"path": "/machine/peripheral"})
        s.close()
        return bytes(raw)
    finally:
        proc.kill()
        proc.wait()


# fuzz-wire: what libvirt sends, our ids, and spellings a fast-path scan must not miss.
WIRE_SEEDS = {
    "libvirt-query-status": b'{"execute":"query-status","id":"libvirt-1"}\r\n',
    "libvirt-migrate": b'{"execute":"migrate","arguments":{"detach":true,"blk":false,'
                       b'"inc":false,"uri":"fd:migrate"},"id":"libvirt-25"}\r\n',
    "libvirt-migrate-continue": b'{"execute":"migrate-continue","arguments":'
                                b'{"state":"pre-switchover"},"id":"libvirt-31"}\r\n',
    "our-reply": b'{"return": {}, "id": "sm-filter-1234-7"}\r\n',
    "escaped-id": b'{"return": {}, "id": "sm\\u002dfilter-1234-7"}\r\n',
    "escaped-event": b'{"ev\\u0065nt": "STOP", "timestamp": {"seconds": 1, '
                     b'"microseconds": 2}}\r\n',
    "escaped-migrate": b'{"execute":"migr\\u0061te","id":"libvirt-9"}\r\n',
    "single-quotes": b"{'event': 'RESUME', 'data': {}}\r\n",
    "nul-first": b'\x00{"execute":"migrate"}\r\n',
    "two-objects": b'{"execute":"query-status"}{"execute":"migrate"}\r\n',
    "words-in-strings": b'{"return": {"event": "sm-filter-", "QMP": "migrate"}, '
                        b'"id": "libvirt-3"}\r\n',
}


def main():
    for d in ("qmp", "wire", "stream", "policy"):
        shutil.rmtree(os.path.join(out, d), ignore_errors=True)
        os.makedirs(os.path.join(out, d))
    with tempfile.TemporaryDirectory(prefix="smcorpus-") as tmp:
        for name, (binary, datadir) in qemus.items():
            raw = session(binary, datadir, tmp)
            lines = raw.split(b"\n")
            greeting = lines[0] + b"\n"
            seeds = {
                "session-whole": b"\x00" + raw,
                "session-lines": b"\x01" + raw,
                "session-chunks": b"\x02\x06" + raw,
                "greeting": b"\x00" + greeting,
                "handshake": b"\x01" + b"\n".join(lines[:2]) + b"\n",
                "handshake-crlf": b"\x00" + b"\r\n".join(lines[:2]) + b"\r\n",
            }
            for seed, data in seeds.items():
                with open(os.path.join(out, "qmp", f"{name}-{seed}"), "wb") as f:
                    f.write(data)
            for i, line in enumerate(lines):
                if line.strip():
                    with open(os.path.join(out, "wire", f"{name}-line-{i:02d}"), "wb") as f:
                        f.write(line + b"\n")
    for name, data in WIRE_SEEDS.items():
        with open(os.path.join(out, "wire", name), "wb") as f:
            f.write(data)
    # Typed mode (first byte 3): one "return" value per line, for the typed commands in the
    # harness's order; a line of every JSON type for every command, and well-formed replies.
    good = ['{"status":"running","running":true}', '{"status":"active"}',
            '[{"name":"bus","type":"child<SCSI>"}]', '"pc"', '"pc"', 'false', '2', '{}', '{}',
            '[{"capability":"events","state":true}]', '{"downtime-limit":300}',
            '{"fdset-id":1,"fd":4}'] + ['{}'] * 9
    with open(os.path.join(out, "qmp", "typed-good"), "wb") as f:
        f.write(b"\x03" + "\n".join(good).encode())
    for i, value in enumerate(["null", "true", "0", "1.5", '"x"', "[]", "{}", "[null]", "[{}]"]):
        with open(os.path.join(out, "qmp", f"typed-all-{i}"), "wb") as f:
            f.write(b"\x03" + "\n".join([value] * len(good)).encode())
    for path in glob.glob(os.path.join(top, "tests", "plugin", "fixtures", "*.bin")):
        shutil.copy(path, os.path.join(out, "stream", os.path.basename(path)))
    policies = glob.glob(os.path.join(top, "etc", "*.conf")) + \
        glob.glob(os.path.join(top, "etc", "vms.d", "*.conf"))
    for path in policies:
        shutil.copy(path, os.path.join(out, "policy", os.path.basename(path)))
    # The shapes the gate tests feed the loader, good and bad.
    extra = {
        "vm-minimal.conf": "[vm]\nsource-qmp=unix:/x\ndest-qmp=unix:/y\nuri=unix:/z\n",
        "vm-all.conf": "[vm]\nsource-qmp=unix:/x\ndest-qmp=tcp:h:4444\nuri=tcp:h:4445\n"
                       "dest-prepare=/bin/true\n[gate]\nmax-attempts=3\nmax-hold=2m\n"
                       "backoff=250ms\non-unquiesceable=use-fix-if-benign\nprobe-timeout=5s\n"
                       "plugin-dir=/usr/lib/safe-migrate\n[migration]\ndowntime-limit=300ms\n"
                       "max-bandwidth=1G\nmultifd=true\nauto-converge=no\ntimeout=10m\n",
        "bad-duration.conf": "[vm]\nsource-qmp=unix:/x\n\n[gate]\nmax-hold=forever\n",
        "bad-key.conf": "[gate]\nbackof=1s\n",
        "bad-group.conf": "[vmm]\nsource-qmp=unix:/x\n",
        "bad-syntax.conf": "[vm\nsource-qmp=unix:/x\n",
        "cli-setting": "max-bandwidth=100M",
    }
    for name, text in extra.items():
        with open(os.path.join(out, "policy", name), "w") as f:
            f.write(text)
    print(f"corpus written to {out}")


if __name__ == "__main__":
    sys.exit(main())

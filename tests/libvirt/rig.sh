#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Two libvirt hosts on one machine, for tests: each a libvirtd in its own UTS + mount namespace
# with private /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
# /var/log/libvirt under DIR/A or DIR/B, its own hostname and host UUID (so migration between
# them passes libvirt's same-host check) and its own migration port range. DIR/H/lib/qtest
# (the host's /var/lib/libvirt/qtest) holds the qtest sockets of the test domains.
#   rig.sh up DIR      start both hosts (idempotent; undoes what it started if it fails)
#   rig.sh down DIR    stop both, with every process of their namespaces (QEMUs, hooks)
#   rig.sh status DIR  one line per host
#   rig.sh restart DIR A|B  restart that host's libvirtd (its domains keep running)
#   rig.sh uri DIR A|B      the host's libvirt URI
# Hooks: SM_LV_HOOKS="[NAME=]PATH ..." at `up` links each PATH as NAME (default: its base
# name) into each host's /etc/libvirt/hooks/qemu.d/ (libvirt reads hooks when it starts).
# Clients: tests/libvirt/vsh DIR A|B virsh-args..., or URI $(rig.sh uri DIR A).
set -euo pipefail

usage() { echo "usage: $0 up|down|status|restart|uri DIR [A|B]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(realpath -m "$2")
hosts=(A B)

# Per-host constants: hostname, host UUID, migration port range. The range base comes from
# SM_LV_PORT_BASE or from DIR, so rigs of parallel test runs rarely share ports.
host_index() { [ "$1" = A ] && echo 0 || echo 1; }
port_base() {
  if [ -n "${SM_LV_PORT_BASE:-}" ]; then echo "$SM_LV_PORT_BASE"; return; fi
  echo $((20000 + ($(printf '%s' "$dir" | cksum | cut -d' ' -f1) % 200) * 100))
}
host_name() { echo "smrig-$(echo "$1" | tr AB ab)"; }
host_uuid() { echo "5a7e0000-0000-4000-8000-00000000000$(host_index "$1")"; }
sock() { echo "$dir/$1/run/libvirt-sock"; }
uri() { echo "qemu:///system?socket=$(sock "$1")"; }

write_config() { # HOST
  local h=$1 base min
  base=$(port_base)
  min=$((base + $(host_index "$h") * 50))
  mkdir -p "$dir/$h"/{etc/hooks/qemu.d,run,lib/qtest,cache,log}
  cat >"$dir/$h/etc/libvirtd.conf" <<EOF
# tests/libvirt/rig.sh host $h
host_uuid = "$(host_uuid "$h")"
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
  cat >"$dir/$h/etc/qemu.conf" <<EOF
# tests/libvirt/rig.sh host $h: QEMU runs as root in the host's namespace, no sVirt, no
# cgroups, no private /dev, its stdio logged to files (no virtlogd).
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_port_min = $min
migration_port_max = $((min + 49))
EOF
  echo 'uri_default = "qemu:///system"' >"$dir/$h/etc/libvirt.conf"
  local hook name
  for hook in ${SM_LV_HOOKS:-}; do # PATH or NAME=PATH
    name=$(basename "${hook%%=*}")
    ln -sfn "$(realpath "${hook#*=}")" "$dir/$h/etc/hooks/qemu.d/$name"
  done
}

pid_of() { # HOST -> libvirtd pid if it runs
  local p
  p=$(cat "$dir/$1/libvirtd.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/libvirtd ] &&
    echo "$p"
}

answering() { virsh -q -c "$(uri "$1")" version >/dev/null 2>&1; }

anchor_of() { # HOST -> pid of the process holding the host's namespaces, if it runs
  local p
  p=$(cat "$dir/$1/anchor.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ -f "$dir/$1/run/.anchor" ] && echo "$p"
}

# The host's namespaces belong to an idle process (the anchor), not to libvirtd, so libvirtd
# can be restarted into them while its domains run on.
start_anchor() { # HOST
  local h=$1 m="" d i
  for d in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
    log:/var/log/libvirt; do
    mkdir -p "${d#*:}"
    m+="mount --bind '$dir/$h/${d%%:*}' '${d#*:}' && "
  done
  rm -f "$dir/$h/run/.anchor"
  setsid unshare --uts --mount --propagation private sh -c \
    "hostname $(host_name "$h") && $m touch /run/libvirt/.anchor && exec sleep infinity" \
    </dev/null >>"$dir/$h/daemon.out" 2>&1 &
  echo $! >"$dir/$h/anchor.pid"
  for i in $(seq 1 100); do
    if anchor_of "$h" >/dev/null; then
      readlink "/proc/$(cat "$dir/$h/anchor.pid")/ns/mnt" >"$dir/$h/mntns"
      return 0
    fi
    sleep 0.05
  done
  echo "rig: could not make the namespaces of host $h:" >&2
  tail -n 5 "$dir/$h/daemon.out" >&2
  return 1
}

start_daemon() { # HOST
  local h=$1 anchor i
  anchor=$(anchor_of "$h")
  rm -f "$dir/$h/libvirtd.pid"
  # nsenter execs libvirtd in place: the pid of this job is the daemon's.
  setsid nsenter --target "$anchor" --mount --uts /usr/sbin/libvirtd -p "$dir/$h/libvirtd.pid" \
    </dev/null >>"$dir/$h/daemon.out" 2>&1 &
  local pid=$!
  for i in $(seq 1 300); do
    answering "$h" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "rig: libvirtd of host $h did not come up; its output:" >&2
  tail -n 20 "$dir/$h/daemon.out" "$dir/$h/log/libvirtd.log" >&2 2>/dev/null || true
  return 1
}

start_host() { # HOST
  local h=$1
  if pid_of "$h" >/dev/null && answering "$h"; then return 0; fi
  if ! anchor_of "$h" >/dev/null; then
    write_config "$h"
    start_anchor "$h"
  fi
  start_daemon "$h"
}

stop_daemon() { # HOST: libvirtd only; its domains (and anything else in the namespace) run on
  local h=$1 p i
  if p=$(pid_of "$h"); then kill -TERM "$p" 2>/dev/null || true; fi
  for i in $(seq 1 100); do pid_of "$h" >/dev/null || return 0; sleep 0.1; done
  p=$(pid_of "$h") && kill -KILL "$p" 2>/dev/null
  return 0
}

# Every process in the mount namespace NS (libvirtd, its QEMUs, hook children).
ns_pids() { # NS
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}

# Kills what is left in HOST's namespace (QEMUs, filters...). The namespace is held open by an
# fd of this shell meanwhile: once its last process dies the kernel gives its id to the next
# namespace made (a QEMU 10 wrapper's unshare, another rig's host), and a sweep by a stale id
# SIGKILLs those. Without the anchor the namespace cannot be pinned, so it is not swept.
sweep_host() { # HOST
  local h=$1 ns p pids pin
  p=$(anchor_of "$h") || return 0
  ns=$(cat "$dir/$h/mntns" 2>/dev/null || true)
  if [ -z "$ns" ]; then # the anchor came up but its namespace was never recorded
    kill -KILL "$p" 2>/dev/null || true
    return 0
  fi
  exec {pin}<"/proc/$p/ns/mnt" || return 0
  if [ "$(readlink "/proc/self/fd/$pin")" = "$ns" ]; then
    for _ in $(seq 1 50); do
      pids=$(ns_pids "$ns")
      [ -n "$pids" ] || break
      kill -KILL $pids 2>/dev/null || true
      sleep 0.1
    done
  fi
  exec {pin}<&-
}

stop_host() { # HOST
  local h=$1
  [ -d "$dir/$h" ] || return 0
  if answering "$h"; then # Let libvirt stop its domains itself, then the daemon.
    for d in $(virsh -q -c "$(uri "$h")" list --name 2>/dev/null); do
      timeout 20 virsh -q -c "$(uri "$h")" destroy "$d" >/dev/null 2>&1 || true
    done
  fi
  stop_daemon "$h"
  sweep_host "$h"
  rm -f "$dir/$h/mntns" "$dir/$h/libvirtd.pid" "$dir/$h/anchor.pid" "$dir/$h/run/.anchor"
}

status_host() {
  local h=$1 p
  if p=$(pid_of "$h") && answering "$h"; then
    echo "$h up pid=$p hostname=$(host_name "$h") uri=$(uri "$h") domains=$(
      virsh -q -c "$(uri "$h")" list --name 2>/dev/null | xargs echo)"
  else
    echo "$h down"
    return 1
  fi
}

case "$cmd" in
up)
  [ -x /usr/sbin/libvirtd ] || { echo "rig: libvirtd not installed (tests/libvirt/setup.sh)" >&2; exit 1; }
  mkdir -p "$dir"
  trap 'for h in "${hosts[@]}"; do stop_host "$h"; done' ERR
  start_host A
  # B reuses what A's libvirtd learned probing the QEMU binaries (same machine, same files:
  # libvirt revalidates the cache anyway), which halves the start-up time.
  if [ ! -d "$dir/B/cache/qemu" ] && [ -d "$dir/A/cache/qemu" ]; then
    mkdir -p "$dir/B/cache" && cp -a "$dir/A/cache/qemu" "$dir/B/cache/"
  fi
  start_host B
  trap - ERR
  ;;
down)
  for h in "${hosts[@]}"; do stop_host "$h"; done
  ;;
restart) # HOST: libvirtd stops and starts again in the same namespaces; domains run on
  [ $# -ge 3 ] || usage
  stop_daemon "$3"
  start_daemon "$3"
  ;;
status)
  rc=0
  for h in "${hosts[@]}"; do status_host "$h" || rc=1; done
  exit $rc
  ;;
uri)
  [ $# -ge 3 ] || usage
  uri "$3"
  ;;
*) usage ;;
esac

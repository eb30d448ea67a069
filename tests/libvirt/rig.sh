#!/usr/bin/env bash
# Two libvirt hosts on one machine, for tests: each a libvirtd in its own UTS + mount namespace
# with private /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
# /var/log/libvirt under DIR/A or DIR/B, its own hostname and host UUID (so migration between
# them passes libvirt's same-host check) and its own migration port range. DIR/H/lib/qtest
# (the host's /var/lib/libvirt/qtest) holds the qtest sockets of the test domains.
#   rig.sh up DIR      start both hosts (idempotent; undoes what it started if it fails)
#   rig.sh down DIR    stop both, with every process of their namespaces (QEMUs, hooks)
#   rig.sh status DIR  one line per host
# Hooks: files or symlinks in SM_LV_HOOKS (space-separated) are linked into each host's
# /etc/libvirt/hooks/qemu.d/ at `up` (libvirt reads hooks when the daemon starts).
# Clients: tests/libvirt/vsh DIR A|B virsh-args..., or URI $(rig.sh uri DIR A).
set -euo pipefail

usage() { echo "usage: $0 up|down|status|uri DIR [A|B]" >&2; exit 2; }
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
  local hook
  for hook in ${SM_LV_HOOKS:-}; do
    ln -sfn "$(realpath "$hook")" "$dir/$h/etc/hooks/qemu.d/$(basename "$hook")"
  done
}

pid_of() { # HOST -> libvirtd pid if it runs
  local p
  p=$(cat "$dir/$1/libvirtd.pid" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/libvirtd ] &&
    echo "$p"
}

answering() { virsh -q -c "$(uri "$1")" version >/dev/null 2>&1; }

start_host() { # HOST
  local h=$1
  if pid_of "$h" >/dev/null && answering "$h"; then return 0; fi
  write_config "$h"
  rm -f "$dir/$h/libvirtd.pid"
  local m="" d
  for d in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
    log:/var/log/libvirt; do
    mkdir -p "${d#*:}"
    m+="mount --bind '$dir/$h/${d%%:*}' '${d#*:}' && "
  done
  # One process from unshare to libvirtd (exec all the way): its pid is the daemon's, and the
  # namespace lives as long as it or any QEMU it started.
  setsid unshare --uts --mount --propagation private sh -c \
    "hostname $(host_name "$h") && $m exec /usr/sbin/libvirtd -p '$dir/$h/libvirtd.pid'" \
    </dev/null >>"$dir/$h/daemon.out" 2>&1 &
  echo $! >"$dir/$h/unshare.pid"
  local i
  for i in $(seq 1 300); do
    if answering "$h"; then
      readlink "/proc/$(cat "$dir/$h/unshare.pid")/ns/mnt" >"$dir/$h/mntns"
      return 0
    fi
    kill -0 "$(cat "$dir/$h/unshare.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "rig: libvirtd of host $h did not come up; its output:" >&2
  tail -n 20 "$dir/$h/daemon.out" "$dir/$h/log/libvirtd.log" >&2 2>/dev/null || true
  return 1
}

# Every process in HOST's mount namespace (libvirtd, its QEMUs, hook children).
ns_pids() {
  local ns p
  ns=$(cat "$dir/$1/mntns" 2>/dev/null) || return 0
  [ -n "$ns" ] || return 0
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && echo "${p#/proc/}"
  done
  return 0
}

stop_host() { # HOST
  local h=$1 p i pids
  [ -d "$dir/$h" ] || return 0
  if answering "$h"; then # Let libvirt stop its domains itself, then the daemon.
    for d in $(virsh -q -c "$(uri "$h")" list --name 2>/dev/null); do
      timeout 20 virsh -q -c "$(uri "$h")" destroy "$d" >/dev/null 2>&1 || true
    done
  fi
  if p=$(pid_of "$h"); then kill -TERM "$p" 2>/dev/null || true; fi
  for i in $(seq 1 50); do pid_of "$h" >/dev/null || break; sleep 0.1; done
  for i in $(seq 1 50); do # What is left in the namespace (QEMUs, filters...): SIGKILL.
    pids=$(ns_pids "$h")
    p=$(cat "$dir/$h/unshare.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && pids+=" $p"
    [ -n "${pids// /}" ] || break
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  rm -f "$dir/$h/mntns" "$dir/$h/libvirtd.pid" "$dir/$h/unshare.pid"
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

#!/bin/sh
# PID 1 of ramster's test guest (busybox sh). Settings come from the kernel command line
# (rk_NAME=VALUE); every line meant for the host starts with "RK " or is the workload's own
# (PASS, RESULT, MISMATCH). It always ends with poweroff; the host bounds the whole boot.
export PATH=/bin:/sbin
# Nothing but the workload may depend on the swap device: when its server dies, a swap-in that
# fails kills whoever needed the page, and a dead PID 1 panics the guest before it can report.
# The rootfs is tmpfs (swappable), so busybox and this script move to ramfs (never swapped), and
# this shell re-executes itself from there inside a cgroup whose memory.swap.max is 0; only the
# workload runs in a cgroup that swaps. nbd-client -swap mlocks itself.
if [ -z "$rk_pinned" ]; then
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /tmp /rk
    mount -t tmpfs tmpfs /tmp
    mount -t ramfs ramfs /rk && mkdir /rk/bin && cp /bin/busybox /init /rk/ \
        && for a in $(ls /bin); do [ -L "/bin/$a" ] && ln -s ../busybox "/rk/bin/$a"; done
    cg=/sys/fs/cgroup
    mount -t cgroup2 cgroup2 $cg && echo +memory > $cg/cgroup.subtree_control \
        && mkdir $cg/pinned $cg/swapping && echo 0 > $cg/pinned/memory.swap.max \
        && echo $$ > $cg/pinned/cgroup.procs && pinned=1
    export rk_pinned="${pinned:-0}"
    [ -x /rk/busybox ] && exec /rk/busybox sh /rk/init
fi
[ -x /rk/busybox ] && export PATH=/rk/bin:/bin:/sbin

rk_mode=probe rk_mib=64 rk_passes=2 rk_seed=1 rk_rewrite=25 rk_port=10809 rk_export=swap0
rk_nbdopts= rk_zram_mib=0 rk_comp=lz4 rk_client=nbd-client rk_timeouts=5,60
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        rk_*=*) eval "${arg%%=*}='${arg#*=}'" ;;
    esac
done

finish() {
    sync
    echo "RK DONE"
    poweroff -f
    sleep 30
}

echo "RK BOOTED kernel=$(uname -r) mode=$rk_mode mem_kib=$(awk '/MemTotal/{print $2}' /proc/meminfo) pinned=$rk_pinned"
[ "$rk_mode" = probe ] && finish

# Modules in the order the host resolved from modules.dep (dependencies first).
while read -r mod params; do
    # shellcheck disable=SC2086
    insmod "/lib/modules/$mod" $params || echo "RK INSMOD-FAILED $mod"
done < /etc/rk-modules

# A client that stays in the foreground, run in the background with its messages on the
# console; returns once /dev/nbd0 has a size (1 if it does not within 30 s).
in_background() {
    "$@" 2>&1 | while read -r line; do echo "RK NBD-CLIENT-SAYS $line"; done &
    for _ in $(seq 1 60); do
        [ "$(cat /sys/block/nbd0/size)" != 0 ] && return 0
        sleep 0.5
    done
    return 1
}

swapdev=
if [ "$rk_mode" = nbd ]; then
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    IFS=,
    # shellcheck disable=SC2086
    set -- $rk_nbdopts  # extra options, comma-separated on the kernel command line
    unset IFS
    # The kernel's nbd messages as they come (the console itself gets only loglevel 1), so the
    # host can time a lost connection and a reconnect; /dev/kmsg keeps them for dmesg too.
    cat /dev/kmsg | awk '/nbd|I\/O error|on swap-device/ && !/rk_/ && n++ < 200 {print "RK KMSG " $0; fflush()}' &
    if [ "$rk_client" = nbd-reconnect ]; then
        set -- nbd-reconnect 10.0.2.2 "$rk_port" "$rk_export" 0 "${rk_timeouts%,*}" "${rk_timeouts#*,}"
        in_background "$@"
    else
        set -- nbd-client 10.0.2.2 "$rk_port" /dev/nbd0 -N "$rk_export" -b 4096 -swap -persist "$@"
        case ",$rk_nbdopts," in
            *,-nofork,* | *,-n,*) in_background "$@" ;;
            *) "$@" ;;
        esac
    fi
    echo "RK NBD-CLIENT rc=$? command=$*"
    swapdev=/dev/nbd0
    # Whether the client stays resident (it must, to reconnect).
    echo "RK NBD-CLIENT-PROCS $(ps | grep -c '[n]bd-\(client\|reconnect\) ')"
    echo "RK NBD-SIZE bytes=$(cat /sys/block/nbd0/size 2>/dev/null) pid=$(cat /sys/block/nbd0/pid 2>/dev/null)"
elif [ "$rk_mode" = zram ]; then
    echo "$rk_comp" > /sys/block/zram0/comp_algorithm
    echo "$((rk_zram_mib * 1024 * 1024))" > /sys/block/zram0/disksize
    echo "RK ZRAM comp=$(cat /sys/block/zram0/comp_algorithm)"
    swapdev=/dev/zram0
fi

if [ -n "$swapdev" ]; then
    mkswap "$swapdev" >/dev/null && swapon -d "$swapdev"
    rc=$?
    echo "RK SWAPON rc=$rc dev=$swapdev"
    [ $rc = 0 ] || finish  # without swap the workload only meets the OOM killer
    tail -n +2 /proc/swaps | while read -r line; do echo "RK SWAP $line"; done
fi

echo "RK WORKLOAD-START mib=$rk_mib passes=$rk_passes seed=$rk_seed rewrite=$rk_rewrite"
# shellcheck disable=SC2016
sh -c '[ "$rk_pinned" = 1 ] && echo $$ > /sys/fs/cgroup/swapping/cgroup.procs; exec "$@"' \
    workload /bin/workload "$rk_mib" "$rk_passes" "$rk_seed" "$rk_rewrite"
echo "RK WORKLOAD-EXIT status=$?"

echo "RK VMSTAT $(awk '$1 == "pswpin" || $1 == "pswpout" {printf "%s=%s ", $1, $2}' /proc/vmstat)"
if [ "$rk_mode" = zram ]; then
    echo "RK ZRAM-MM $(cat /sys/block/zram0/mm_stat)"
fi
# Kernel messages about the swap device, I/O and faults; the host decides what is an error.
dmesg > /tmp/dmesg
pat='nbd|swap|error|fail|oom|killed process|call trace|bus error'
echo "RK DMESG-LINES $(grep -ciE "$pat" /tmp/dmesg)"
grep -iE "$pat" /tmp/dmesg | head -n 2000 | while read -r line; do echo "RK DMESG $line"; done
finish

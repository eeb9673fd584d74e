#!/bin/bash
# Cost of the sandbox wrapper: the instance command line nimbus builds, running `true`.
S="--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try --hostname nimbus --die-with-parent --new-session --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --dir /etc --ro-bind-try /etc/ssl /etc/ssl --ro-bind-try /etc/resolv.conf /etc/resolv.conf --ro-bind-try /etc/hosts /etc/hosts --ro-bind-try /etc/nsswitch.conf /etc/nsswitch.conf --ro-bind-try /etc/ld.so.cache /etc/ld.so.cache --ro-bind-try /etc/alternatives /etc/alternatives --ro-bind-try /etc/java-17-openjdk /etc/java-17-openjdk --dir /root --dir /root/.pyenv --dir /root/.pyenv/versions --ro-bind /root/.pyenv/versions/3.11.7 /root/.pyenv/versions/3.11.7 --dir /var --proc /proc --dev /dev --perms 1777 --size 536870912 --tmpfs /tmp --ro-bind /tmp /var/task --ro-bind /tmp /var/runtime --chdir /var/task"
N=100
t0=$(date +%s%N); for i in $(seq $N); do /usr/bin/true; done; t1=$(date +%s%N)
for i in $(seq $N); do bwrap $S -- setpriv --reuid 200000 --regid 200000 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- /usr/bin/true; done; t2=$(date +%s%N)
echo "plain: $(( (t1-t0)/N/1000 )) us/run; sandboxed: $(( (t2-t1)/N/1000 )) us/run"

# Sourced by the image scripts: how buildah runs on a machine without a container daemon.
# chroot isolation needs no OCI runtime and no cgroup set-up for the Dockerfile's RUN steps (it
# works as root in a VM or a container) and shares the host's network. The storage driver is
# buildah's own default (containers-storage.conf; overlay where the kernel has it).
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
# debootstrap, chroot and groupadd live in the sbin directories, which a non-login PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac

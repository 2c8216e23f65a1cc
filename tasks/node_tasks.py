"""The node steps that need nothing but their script: one Prefect task per step kind.

Each runs its plan step's static script on every host of the step (see tasks/node_step.py); its
docstring names the script (the table: installers/step_kinds.py). Steps with more to do on the
controller side have their own modules: preflight, join, kubeconfig, verify.
"""

from installers.plan import Step
from tasks.addons import run_accounted_step
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task


@step_task
def os_prep(step: Step) -> list[HostOutcome]:
    """`os-prep.sh` on each host: swap off, kernel modules, sysctl, the /etc/hosts block."""
    return run_node_step(step)


@step_task
def runtime(step: Step) -> list[HostOutcome]:
    """`containerd.sh` on each host: install and configure containerd (config v2/v3,
    SystemdCgroup, mirrors, proxy)."""
    return run_node_step(step)


@step_task
def kube_packages(step: Step) -> list[HostOutcome]:
    """`kube-packages.sh` on each host: kubeadm, kubelet and kubectl from pkgs.k8s.io or the
    mirror, held at the version."""
    return run_node_step(step)


@step_task
def kube_vip(step: Step) -> list[HostOutcome]:
    """`kube-vip.sh` on each host: place (or switch) the kube-vip static pod that serves the
    control-plane VIP."""
    return run_node_step(step)


@step_task
def kubeadm_init(step: Step) -> list[HostOutcome]:
    """`kubeadm-init.sh` on the first control plane (tokens and certificate keys never printed)."""
    return run_node_step(step)


@step_task
def cni(step: Step) -> list[HostOutcome]:
    """`cni.sh` on the first control plane: apply the pinned CNI manifest (or render the pinned
    chart with a pinned helm), every file verified and its sha256 reported (tasks/addons.py)."""
    return run_accounted_step(step)


@step_task
def storage(step: Step) -> list[HostOutcome]:
    """`storage.sh` on the first control plane: local-path-provisioner, the default StorageClass."""
    return run_node_step(step)


@step_task
def reset(step: Step) -> list[HostOutcome]:
    """`reset.sh` on each host: kubeadm reset and remove what kai installed (idempotent on a
    blank node)."""
    return run_node_step(step)

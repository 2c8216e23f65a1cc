"""Commented sample specs for `kai init` (examples/*.yaml are these same texts)."""

from __future__ import annotations

_HEAD = """\
# kai cluster spec ({mode}). Check it without touching any host:
#   kai plan {file} --mode {mode} [--scripts]
# Every field is listed by `kai schema`. Secrets are never written here: only key file paths
# and Prefect Secret block names.
name: {name}

kubernetes:
  version: "1.36"            # supported minors: 1.35, 1.36, 1.37 (or a full patch, "1.36.4")
  # packages:
  #   repo_url: https://pkgs.k8s.io

"""

_ENDPOINT_AIO = """\
# The API endpoint. "node" = this node's address:6443. Choose kube_vip or load_balancer
# now if you may grow to HA later: kubeadm cannot change the endpoint afterwards.
control_plane_endpoint:
  type: node

"""

_ENDPOINT_HA = """\
# HA needs a stable endpoint in front of the control planes.
control_plane_endpoint:
  type: kube_vip             # or: load_balancer (address: lb.example.internal, port: 6443)
  address: 192.168.10.100    # a free IP in the nodes' subnet, not a node's address
  interface: eth0

"""

_COMMON = """\
networking:
  pod_cidr: 10.244.0.0/16
  service_cidr: 10.96.0.0/12
  node_cidr_mask: 24         # each node gets a /24 of pod_cidr
  cni: calico                # calico | flannel | cilium (from its Helm chart)
  kube_proxy_mode: iptables  # or nftables
  dns_domain: cluster.local

runtime:
  containerd:
    source: release          # release (GitHub) | distro (OS package) | mirror (needs mirror.url)
    # version: 2.3.4
    # registry_mirrors:
    #   docker.io: [https://registry-mirror.example.internal]
  # proxy:
  #   http: http://proxy.example.internal:3128
  #   https: http://proxy.example.internal:3128
  #   no_proxy: [.example.internal]   # CIDRs, nodes, endpoint and dns domain are added for you

# mirror:                    # offline installs: one base URL replaces every download
#   url: http://mirror.example.internal/kai

kubelet:
  fail_cgroup_v1: true       # kubelet ≥ 1.35 refuses cgroup v1 hosts unless false

storage:
  local_path: true           # local-path provisioner as the default StorageClass

addons:
  monitoring: false          # true: metrics-server + kube-prometheus (Prometheus, Alertmanager,
                             # node-exporter, kube-state-metrics, Grafana)
  # checksums:               # reviewed sha256 pins of add-on files (file name -> sha256)
  #   cilium-1.18.4.tgz: <64 hex digits>

ssh:
  user: root
  port: 22
  private_key_file: ~/.ssh/id_ed25519   # or private_key_secret: <Prefect Secret block>
  sudo: none                 # none (root) | nopasswd | password (sudo_password_secret: <block>)
  accept_new_host_keys: false  # host keys are verified against known_hosts_file / fingerprints
  # known_hosts_file: ~/.ssh/known_hosts
  # host_key_fingerprints:
  #   node-1: ["SHA256:..."]
  # bastion: {{host: bastion.example.internal, user: jump}}

# steps:                     # per-step policy overrides
#   runtime: {{retries: 5, timeout_s: 900, max_retry_delay_s: 60}}
#   health: {{deadline_s: 60}}  # verify/health poll until a deadline (600 s / 120 s) instead of retrying

# preflight:
#   ignore: [swap]           # turns these checks' errors into warnings

"""

_NODES_AIO = """\
nodes:
  - name: node-1
    address: 192.168.10.11
    roles: [control-plane]   # all-in-one: the control plane also runs workloads
    # connection: local      # the node is the machine kai runs on: no SSH, its steps run as local
    #                        # processes (as root, or through `sudo -n`); address: its own IP
"""

_NODES_HA = """\
nodes:                       # an odd number (≥ 3) of control planes keeps etcd quorum
  - name: cp-1
    address: 192.168.10.11
    roles: [control-plane]
  - name: cp-2
    address: 192.168.10.12
    roles: [control-plane]
  - name: cp-3
    address: 192.168.10.13
    roles: [control-plane]
  - name: worker-1
    address: 192.168.10.21
    roles: [worker]
    labels: {tier: apps}
  - name: worker-2
    address: 192.168.10.22
    roles: [worker]
    # taints: ["dedicated=batch:NoSchedule"]
    # ssh: {user: admin, sudo: nopasswd}   # per-node overrides of the ssh block
"""


def sample_spec(mode: str) -> str:
    if mode == "ha":
        return (_HEAD.format(mode="ha", file="ha.yaml", name="demo-ha") + _ENDPOINT_HA
                + _COMMON.format() + _NODES_HA)
    if mode == "all_in_one":
        return (_HEAD.format(mode="all_in_one", file="all-in-one.yaml", name="demo")
                + _ENDPOINT_AIO + _COMMON.format() + _NODES_AIO)
    raise ValueError(f"no sample for mode {mode!r}")

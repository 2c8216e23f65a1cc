"""The spec's SSH block (defaults + per-node overrides) becomes runner targets; secrets come only
from named Prefect Secret blocks (a stand-in reader here) and are registered with the redactor."""

from installers import redact
from installers.spec import load_spec
from tasks.targets import ssh_targets

FP_A, FP_B = "SHA256:" + "a" * 43, "SHA256:" + "b" * 43


def spec():
    return load_spec({
        "name": "t",
        "nodes": [
            {"name": "a", "address": "10.0.0.1", "roles": ["control-plane"]},
            {"name": "b", "address": "10.0.0.2", "roles": ["worker"],
             "ssh": {"user": "debian", "port": 2222, "sudo": "password",
                     "sudo_password_secret": "b-sudo", "private_key_file": "/keys/b"}},
        ],
        "ssh": {"private_key_secret": "fleet-key", "private_key_passphrase_secret": "fleet-pass",
                "known_hosts_file": "/kh", "host_key_fingerprints": {"a": [FP_A],
                                                                     "10.0.0.2": [FP_B]},
                "bastion": {"host": "10.0.0.9", "user": "jump", "private_key_file": "/keys/jump"}},
    })


def reader(calls):
    def read(name):
        calls.append(name)
        value = f"secret-value-of-{name}"
        redact.REDACTOR.add(value)
        return value
    return read


def test_defaults_overrides_pins_and_secrets():
    calls = []
    t = ssh_targets(spec(), secret=reader(calls))
    a, b = t["a"], t["b"]
    assert (a.user, a.port, a.sudo, a.sudo_password) == ("root", 22, "none", None)
    assert a.key_text == "secret-value-of-fleet-key" and a.key_passphrase == "secret-value-of-fleet-pass"
    assert a.host_key_fingerprints == (FP_A,) and b.host_key_fingerprints == (FP_B,)
    assert (b.user, b.port, b.sudo, b.key_file) == ("debian", 2222, "password", "/keys/b")
    assert b.sudo_password == "secret-value-of-b-sudo"
    assert a.bastion.host == "10.0.0.9" and a.bastion.user == "jump" and a.bastion.known_hosts == "/kh"
    assert sorted(set(calls)) == ["b-sudo", "fleet-key", "fleet-pass"]
    assert calls.count("fleet-key") == 1, "a secret block is read once per run"
    assert redact.REDACTOR.redact("key secret-value-of-b-sudo here") == "key *** here"


def test_secrets_are_not_in_the_targets_repr():
    t = ssh_targets(spec(), secret=reader([]))
    assert "secret-value-of" not in repr(t["b"])

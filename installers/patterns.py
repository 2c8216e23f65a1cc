"""Text patterns shared by the spec (validation) and the SSH runner (verification).

Use them with `fullmatch`: `$` also matches before a trailing newline, so `match` would let
"SHA256:…\n" through.
"""

from __future__ import annotations

import re

# An OpenSSH SHA256 host-key fingerprint as `ssh-keygen -l -E sha256` prints it: base64 of the
# 32-byte digest without its '=' padding (43 characters).
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")

"""The file `ssh-config`'s `ProxyCommand` runs: `python -I -S .../cloudsh/proxy_main.py
(--sandbox | --aws [--profile P]) --region R [--wake] INSTANCE_ID` (see `cloudsh.proxy`).

A few lines on purpose: a file run as a program is compiled at every start, a module's
bytecode is cached. Without `site` (`-S`, which costs as much as the rest of the warm
path) the virtualenv is not on `sys.path`: cloudsh is found from this file's place, and
`cloudsh.proxy` adds the virtualenv only when it must ask the cloud.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cloudsh.proxy import main  # noqa: E402

status = main()
sys.stderr.flush()
# At once: OpenSSH waits for its ProxyCommand, and tearing the interpreter down (a thread
# still blocked on stdin, every module) takes longer than the whole relay.
os._exit(status)

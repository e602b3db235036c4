"""The Python API for scripts and the IPython prompt.

    from cloudsh import Cloud
    cloud = Cloud()                 # Cloud(sandbox=True), Cloud(profile=..., region=...)
    box = cloud.launch("box", "g5.xlarge", spot=True)
    box.run("nvidia-smi").stdout
    client = box.ssh()              # a connected paramiko SSHClient
    with box.tunnel(8888) as t:     # t.url -> http://localhost:8888/
        ...

The verbs of the command language are methods: on `Cloud` taking a NAME (as on the command
line) and on `Instance` acting on that box. Every method is synchronous for scripts and has
an `a`-prefixed async twin (`await cloud.alaunch(...)`) for code that runs its own event
loop. The sync methods run on one private event loop in a background thread, so they work
in IPython or Jupyter and reuse SSH connections. Errors are `cloudsh.errors.CloudshError`s.

Modules: `cloud` (Cloud), `instance` (Instance), `session` (the backend and loop they
share, and the price gate), `results` (tables, instance lists, tunnel handles).
"""

from cloudsh.api.cloud import Cloud
from cloudsh.api.instance import Instance
from cloudsh.api.results import InstanceList, Table, TunnelHandle

__all__ = ["Cloud", "Instance", "InstanceList", "Table", "TunnelHandle"]

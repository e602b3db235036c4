"""Long-running scripts on a box: start detached, watch, pull results home, survive interruptions.

On the box every job lives in `~/.cloudsh/jobs/<id>/`: the uploaded script, `job.json`
(what to run), `log` (its output), `state.json` (running / finished / interrupted /
stopped, exit status, times), beside `~/.cloudsh/jobs/agent.py`: the job supervisor,
`cloudsh.agents.jobs`, a stdlib-only program copied there from its source file. The
supervisor is started with `setsid`, so it survives SSH disconnects and the laptop going
to sleep; it polls the instance metadata `spot/instance-action` (IMDSv2) every 5 s and,
on a notice, writes the marker file `$CLOUDSH_INTERRUPT_FILE`, sends the script SIGTERM,
flushes the filesystem and records "interrupted". On EC2 the metadata lives at
169.254.169.254; sandbox boxes get their own address in `CLOUDSH_IMDS_ENDPOINT`. The code
is the same.

What every machine must know about a job is in the box's EC2 tags (`cloudsh:job:<id>`,
compact JSON, `models.JobTag`), so `jobs` on another laptop sees it; old finished jobs
move from the tags to a record file on the box (`archive.py`), within EC2's tag limits.

    box.py        the agent on a box (install, call), finding a job's box, local index
    state.py      a job's state: listing (a pure read) and `record_states` (the tag write)
    transfer.py   results home: sync one job or all, follow a job, results not yet home
    lifecycle.py  plan, start, stop, resume, logs
    archive.py    at most `JOB_TAGS_MAX` job tags on a box: the rest in its record file
"""

from cloudsh.models import JOB_TAG_PREFIX as TAG_PREFIX
from cloudsh.ops.jobs.box import JOBS_DIR, box_status, find_job, local_dir_of
from cloudsh.ops.jobs.lifecycle import (
    ScriptPlan,
    logs,
    new_job_id,
    plan_script,
    resume_job,
    start_script,
    stop_job,
)
from cloudsh.ops.jobs.state import derive_state, get_job, list_jobs, record_states, running_jobs
from cloudsh.ops.jobs.transfer import (
    OutputCallback,
    SyncResult,
    catch_up,
    follow,
    results_not_home,
    sync_all,
    sync_job,
)

__all__ = [
    "JOBS_DIR",
    "TAG_PREFIX",
    "OutputCallback",
    "ScriptPlan",
    "SyncResult",
    "box_status",
    "catch_up",
    "derive_state",
    "find_job",
    "follow",
    "get_job",
    "list_jobs",
    "local_dir_of",
    "logs",
    "new_job_id",
    "plan_script",
    "record_states",
    "results_not_home",
    "resume_job",
    "running_jobs",
    "start_script",
    "stop_job",
    "sync_all",
    "sync_job",
]

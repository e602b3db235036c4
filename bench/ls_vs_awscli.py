"""`cloudsh ls --json` vs `aws ec2 describe-instances` on 300 sandbox instances (best of 3).

Target: ratio (cloudsh / aws) <= 0.8.
"""

from __future__ import annotations

import json
import shutil

from bench.common import BIN, bench_sandbox, best_of, report, run

N = 300


def main() -> float:
    # A long boot delay keeps the sandbox from starting 300 SSH servers: this is about the API.
    with bench_sandbox(boot_s=3600) as env:
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"])
        image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        for start in range(0, N, 100):
            ec2.run_instances(
                ImageId=image, InstanceType="t3.micro", MinCount=100, MaxCount=100,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"bench-{start}"}]}],
            )
        aws = shutil.which("aws", path=str(BIN)) or shutil.which("aws")
        assert aws, "the AWS CLI is needed as the peer (pip install awscli)"
        cloudsh = [str(BIN / "cloudsh"), "ls", "--json"]
        peer = [aws, "ec2", "describe-instances", "--output", "json"]
        # Check both see the same 300 instances before timing them.
        ours = json.loads(run(cloudsh, env).stdout)
        theirs = json.loads(run(peer, env).stdout)
        n_theirs = sum(len(r["Instances"]) for r in theirs["Reservations"])
        assert len(ours) == N == n_theirs, f"cloudsh saw {len(ours)}, aws saw {n_theirs}, launched {N}"
        t_ours = best_of(3, lambda: run(cloudsh, env))
        t_peer = best_of(3, lambda: run(peer, env))
    ratio = t_ours / t_peer
    report(
        f"ls --json on {N} sandbox instances (best of 3)",
        [("cloudsh ls --json", f"{t_ours * 1000:.0f} ms"), ("aws ec2 describe-instances", f"{t_peer * 1000:.0f} ms"),
         ("ratio", f"{ratio:.2f} (target <= 0.8)")],
    )
    return ratio


if __name__ == "__main__":
    main()

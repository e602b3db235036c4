"""`cloudsh ls --json` vs `aws ec2 describe-instances` on 300 sandbox instances, one of
them a spot box (so spot prices are part of the listing), cold and warm (best of 3 each).

Cold: cloudsh's cache directory and the AWS CLI's are emptied before every run (a first
`ls` on a new machine); warm: as left by the run before. Target: ratio (cloudsh / aws)
<= 0.8 in both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.common import BIN, bench_sandbox, best_of, report, run

N = 300


def main() -> dict[str, float]:
    # A long boot delay keeps the sandbox from starting 300 SSH servers: this is about the API.
    with bench_sandbox(boot_s=3600) as env:
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"])
        image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        for start in range(0, N - 1, 100):
            count = min(100, N - 1 - start)
            ec2.run_instances(
                ImageId=image, InstanceType="t3.micro", MinCount=count, MaxCount=count,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"bench-{start}"}]}],
            )
        ec2.run_instances(
            ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
            InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "bench-spot"}]}],
        )
        aws = shutil.which("aws", path=str(BIN)) or shutil.which("aws")
        assert aws, "the AWS CLI is needed as the peer (pip install awscli)"
        cloudsh = [str(BIN / "cloudsh"), "ls", "--json"]
        peer = [aws, "ec2", "describe-instances", "--output", "json"]
        caches = [Path(env["XDG_CACHE_HOME"]), Path(env["HOME"]) / ".aws" / "cli" / "cache"]

        def cold(argv: list[str]) -> None:
            for c in caches:
                shutil.rmtree(c, ignore_errors=True)
            run(argv, env)

        # Check both see the same instances, the spot box among them, before timing them.
        ours = json.loads(run(cloudsh, env).stdout)
        theirs = json.loads(run(peer, env).stdout)
        n_theirs = sum(len(r["Instances"]) for r in theirs["Reservations"])
        assert len(ours) == N == n_theirs, f"cloudsh saw {len(ours)}, aws saw {n_theirs}, launched {N}"
        assert [r["market"] for r in ours].count("spot") == 1
        figures = {
            "cold_cloudsh_s": best_of(3, lambda: cold(cloudsh)),
            "cold_aws_s": best_of(3, lambda: cold(peer)),
        }
        run(cloudsh, env)
        run(peer, env)
        figures["warm_cloudsh_s"] = best_of(3, lambda: run(cloudsh, env))
        figures["warm_aws_s"] = best_of(3, lambda: run(peer, env))
    figures["cold_ratio"] = figures["cold_cloudsh_s"] / figures["cold_aws_s"]
    figures["warm_ratio"] = figures["warm_cloudsh_s"] / figures["warm_aws_s"]
    report(
        f"ls --json on {N} sandbox instances, one spot (best of 3)",
        [(f"{kind}: cloudsh ls --json / aws ec2 describe-instances",
          f"{figures[kind + '_cloudsh_s'] * 1000:.0f} ms / {figures[kind + '_aws_s'] * 1000:.0f} ms = "
          f"{figures[kind + '_ratio']:.2f} (target <= 0.8)")
         for kind in ("cold", "warm")],
        figures,
    )
    return figures


if __name__ == "__main__":
    main()

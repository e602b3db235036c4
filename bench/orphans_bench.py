"""`cloudsh orphans --all-regions --json` vs a one-region `cloudsh ls --json` (best of 3),
on a sandbox holding a few of each kind of orphan. The regions are swept in parallel, so
the sweep should cost little more than one region's listing.

Target: ratio (orphans / ls) <= 1.5.
"""

from __future__ import annotations

import json
import time

from bench.common import BIN, bench_sandbox, best_of, report, run


def main() -> float:
    with bench_sandbox(boot_s=3600) as env:
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"])
        image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=20, MaxCount=20)
        vols = [ec2.create_volume(AvailabilityZone=f"{env['AWS_DEFAULT_REGION']}a", Size=8 + n)["VolumeId"]
                for n in range(10)]
        time.sleep(1.0)  # EC2 (the sandbox) may not know a new volume for a moment
        for n, vol in enumerate(vols):
            ec2.create_snapshot(VolumeId=vol)
            ec2.allocate_address(Domain="vpc")
            ec2.create_security_group(GroupName=f"cloudsh-bench-{n}", Description="bench")
        orphans = [str(BIN / "cloudsh"), "orphans", "--all-regions", "--json"]
        ls = [str(BIN / "cloudsh"), "ls", "--json"]
        found = json.loads(run(orphans, env).stdout)
        assert len(found) >= 30, f"expected at least 30 orphans, found {len(found)}"
        run(ls, env)  # warm the caches both use
        t_orphans = best_of(3, lambda: run(orphans, env))
        t_ls = best_of(3, lambda: run(ls, env))
        regions = len({o["region"] for o in found})
    ratio = t_orphans / t_ls
    report(
        f"orphans --all-regions ({regions} region(s) served, {len(found)} orphans) vs ls (best of 3)",
        [("cloudsh orphans --all-regions --json", f"{t_orphans * 1000:.0f} ms"),
         ("cloudsh ls --json", f"{t_ls * 1000:.0f} ms"), ("ratio", f"{ratio:.2f} (target <= 1.5)")],
    )
    return ratio


if __name__ == "__main__":
    main()
